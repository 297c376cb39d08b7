"""Unit tests of request signing, secrets at rest and redaction."""
