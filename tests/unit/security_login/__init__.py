"""Tests of the login security primitives (corral.server.security)."""
