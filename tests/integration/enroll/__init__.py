"""Enrollment, revocation and API certificates over real TLS."""
