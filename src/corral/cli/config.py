"""The CLI's saved login: server URL, token and how to trust its certificate (mode 0600)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

CONFIG_FILE = "config.json"
PINNED_CERT_FILE = "server.pem"


@dataclass
class Config:
    """What ``corral login`` saved. ``cert`` is a pinned server certificate (trust on first use),
    ``ca`` a CA file given with ``--ca``; ``insecure`` turns TLS verification off."""

    url: str | None = None
    token: str | None = None
    username: str | None = None
    cert: str | None = None
    ca: str | None = None
    insecure: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def verify(self) -> bool | str | ssl.SSLContext:
        """The ``verify=`` to give the SDK client."""
        if self.insecure:
            return False
        if self.cert is not None:
            from corral.api.errors import InvalidInput
            from corral.util.tls import pinned_context

            try:
                return pinned_context(Path(self.cert).read_text())
            except OSError as exc:
                raise InvalidInput(
                    f"cannot read the pinned server certificate {self.cert}: {exc.strerror}; "
                    "run corral login again"
                ) from exc
        if self.ca is not None:
            return self.ca
        return True


def config_dir() -> Path:
    """``$CORRAL_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/corral``, else ``~/.config/corral``."""
    if env := os.environ.get("CORRAL_CONFIG_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral"


def load_saved() -> Config:
    """The saved configuration, as written by ``corral login`` (empty if none)."""
    path = config_dir() / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except (OSError, ValueError) as exc:
        from corral.api.errors import InvalidInput

        raise InvalidInput(f"cannot read {path}: {exc}; run corral login again") from exc
    known = {k: data.pop(k) for k in list(data) if k in Config.__dataclass_fields__}
    return Config(**known, extra=data)


def load() -> Config:
    """The saved configuration with ``CORRAL_URL`` / ``CORRAL_TOKEN`` overrides applied.

    TLS settings saved for one URL are not used for another one given in ``CORRAL_URL``.
    """
    config = load_saved()
    url = os.environ.get("CORRAL_URL")
    if url and url.rstrip("/") != config.url:
        config = Config(url=url.rstrip("/"))
    if token := os.environ.get("CORRAL_TOKEN"):
        config.token = token
    return config


def require_login(config: Config) -> tuple[str, str]:
    """The URL and token to use; ``Unauthenticated`` if there is no login."""
    if not config.url or not config.token:
        from corral.api.errors import Unauthenticated

        raise Unauthenticated(
            "not logged in: run 'corral login URL' (or set CORRAL_URL and CORRAL_TOKEN)"
        )
    return config.url, config.token


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to a file only the owner can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save(config: Config) -> Path:
    """Write the configuration (mode 0600); returns its path."""
    data = {k: v for k, v in asdict(config).items() if k != "extra" and v not in (None, False)}
    path = config_dir() / CONFIG_FILE
    _write_private(path, json.dumps({**config.extra, **data}, indent=2) + "\n")
    return path


def save_pinned_cert(pem: str) -> Path:
    """Store the server certificate trusted on first use; returns its path."""
    path = config_dir() / PINNED_CERT_FILE
    _write_private(path, pem)
    return path


def clear() -> bool:
    """Forget the login (config and pinned certificate); whether there was one."""
    found = False
    for name in (CONFIG_FILE, PINNED_CERT_FILE):
        path = config_dir() / name
        if path.exists():
            path.unlink()
            found = True
    return found
