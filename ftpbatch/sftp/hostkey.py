"""The SFTP server's host key: ed25519, made once under the data root by ``ftpbatch init``."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from ..errors import ConfigError

DEFAULT_HOST_KEY = "ssh/host_ed25519_key"


def ensure_host_key(path: Path) -> tuple[str, bool]:
    """Make an ed25519 key at ``path`` unless one is there; returns (fingerprint, made now)."""
    if path.exists():
        return load_host_key(path).get_fingerprint("sha256"), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="ftpbatch host key")
    # written 0600 from the start: a private key is never readable by others, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    return key.get_fingerprint("sha256"), True


def load_host_key(path: Path) -> asyncssh.SSHKey:
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        raise ConfigError(
            f"SFTP host key {path} does not exist: run 'ftpbatch init' (it makes one) or give --sftp-host-key FILE"
        ) from None
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"SFTP host key {path} cannot be read: {exc}") from None
