"""Login security primitives: pure, I/O-free building blocks for the identity service.

``passwords`` (argon2 hashing and strength policy), ``totp`` (TOTP two-factor codes, QR codes,
recovery codes), ``lockout`` (back-off policy after failed logins; counters live in the DB) and
``ratelimit`` (in-memory token buckets for 429 + Retry-After). Nothing here touches the database,
the network or the web framework; callers own persistence and wiring.
"""
