"""A fake Corral server in memory, for unit tests of code built on the SDK (and of the CLI).

    fake = FakeCorral()
    client = Client("http://corral.test", fake.login_token(), transport=fake.transport)

It implements the REST surface of ``/api/v1`` with the contract models of ``corral.api``; it is a
test double, not a second server: no scheduler, no workflows, no persistence.
"""

from corral.sdk.testing.server import FakeCorral

__all__ = ["FakeCorral"]
