"""Server settings, from arguments and ``CORRAL_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from corral.api.errors import InvalidInput


def default_data_dir() -> Path:
    """``$CORRAL_DATA_DIR``, else ``/var/lib/corral`` for root, else ``~/.local/share/corral``."""
    env = os.environ.get("CORRAL_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/corral")
    return Path.home() / ".local/share/corral"


@dataclass
class ServerSettings:
    """Everything the composition root needs to build a server.

    ``database_url`` defaults to SQLite (WAL) at ``<data_dir>/corral.db``; set ``CORRAL_DATABASE_URL``
    (``postgresql+asyncpg://…``) for PostgreSQL. ``public_url`` is what agents use to call back; it
    defaults to ``http(s)://127.0.0.1:<port>``. ``admin_password`` (or ``CORRAL_ADMIN_PASSWORD``)
    is the password the admin account gets at first start; unset, a random one is generated.

    API certificate (with ``tls``): ``cert_file`` + ``key_file`` (PEM chain, unencrypted key) or
    ``pkcs12_file`` (password: ``pkcs12_password`` or ``CORRAL_PKCS12_PASSWORD``), else a
    self-signed one generated at first start; ``cert_path`` / ``key_path`` are what the listener
    serves (a PKCS#12 file is extracted there at start). The cluster CA lives in ``ca_dir``.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "0.0.0.0"
    port: int = 8443
    tls: bool = True
    database_url: str | None = None
    public_url: str | None = None
    token_ttl_s: int = 12 * 3600
    heartbeat_timeout_s: float = 10.0
    agent_task_timeout_s: float = 600.0
    agent_poll_interval_s: float = 5.0
    fault_injection: bool = False
    admin_password: str | None = None
    trusted_proxy: bool = False
    """Behind a reverse proxy: take the client address from X-Forwarded-For (audit log)."""
    expensive_rate_per_s: float = 100.0
    expensive_burst: int = 1000
    """Per user: how many expensive calls (VM creation, image imports and uploads, audit
    exports) may come at once, and how many per second after that (``429`` + ``Retry-After``)."""
    deletion_policy: str | None = None
    """The deletion policy of VMs, volumes and images until an admin sets one
    (``PUT /deletion-policies``): ``immediate``, ``delayed`` (the recycle bin) or ``never``;
    unset: ``CORRAL_DELETION_POLICY``, else ``delayed``."""
    deletion_retention_hours: float = 24.0
    """How long a ``delayed`` delete stays in the recycle bin, until an admin sets it."""
    cert_file: Path | None = None
    key_file: Path | None = None
    pkcs12_file: Path | None = None
    pkcs12_password: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidInput("give both the certificate (--cert) and its key (--key)")
        if self.pkcs12_file is not None and self.cert_file is not None:
            raise InvalidInput("give either --pkcs12 or --cert/--key, not both")
        if not self.tls and (self.cert_file or self.pkcs12_file):
            raise InvalidInput("a TLS certificate was given with plain HTTP (--http)")
        if self.pkcs12_password is None:
            self.pkcs12_password = os.environ.get("CORRAL_PKCS12_PASSWORD") or None
        if self.database_url is None:
            self.database_url = os.environ.get("CORRAL_DATABASE_URL")
        if self.admin_password is None:
            self.admin_password = os.environ.get("CORRAL_ADMIN_PASSWORD") or None
        if self.deletion_policy is None:
            self.deletion_policy = os.environ.get("CORRAL_DELETION_POLICY") or "delayed"
        if self.deletion_policy not in ("immediate", "delayed", "never"):
            raise InvalidInput(
                f"unknown deletion policy {self.deletion_policy!r}",
                supported=["immediate", "delayed", "never"],
            )
        if os.environ.get("CORRAL_FAULT_INJECTION") == "1":
            self.fault_injection = True

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'corral.db'}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def callback_base(self) -> str:
        return self.public_url or f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def cert_path(self) -> Path:
        if self.cert_file is not None:
            return Path(self.cert_file)
        if self.pkcs12_file is not None:
            return self.data_dir / "tls" / "pkcs12.crt"
        return self.data_dir / "tls" / "server.crt"

    @property
    def key_path(self) -> Path:
        if self.key_file is not None:
            return Path(self.key_file)
        if self.pkcs12_file is not None:
            return self.data_dir / "tls" / "pkcs12.key"
        return self.data_dir / "tls" / "server.key"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "ca"
