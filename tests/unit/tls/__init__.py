"""Unit tests of the cluster CA, enrollment state and TLS material."""
