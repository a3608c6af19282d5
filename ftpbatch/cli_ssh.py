"""The command line's SFTP parts: key options of ``product add|set|show``, the host key of ``init``.

Kept beside cli.py so that the parser stays readable; asyncssh is imported
only by the commands that need it.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

from .config import Settings


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-key-file", metavar="FILE",
                        help="SFTP public keys of this product (OpenSSH authorized_keys lines; '' removes them)")
    parser.add_argument("--ssh-keys-only", action=argparse.BooleanOptionalAction, default=None,
                        help="refuse SFTP logins by password (keys only)")


def key_changes(args: argparse.Namespace) -> tuple[tuple[str, ...] | None, bool | None]:
    """(key lines or None, keys-only or None) from the flags, checked before anything is stored."""
    keys = None
    if args.ssh_key_file is not None:
        from .sftp.keys import read_key_file

        keys = read_key_file(args.ssh_key_file)
    return keys, args.ssh_keys_only


def unusable_password_hash() -> str:
    """For a product made with keys only: a password nobody knows (the column is never empty)."""
    from .passwords import hash_password

    return hash_password(secrets.token_urlsafe(32))


def store_keys(ledger: Any, name: str, keys: tuple[str, ...] | None, keys_only: bool | None) -> str | None:
    """Store the SSH settings; returns what to print (fingerprints of the keys now registered), or None."""
    if keys is None and keys_only is None:
        return None
    access = ledger.ssh_keys.update(name, keys=keys, keys_only=keys_only)
    from .sftp.keys import fingerprints

    shown = fingerprints(access.keys)
    lines = [f"  SSH key {f}" for f in shown] or ["  no SSH keys (SFTP logins by password only)"]
    if access.keys_only:
        lines.append("  SFTP logins by password are refused (--ssh-keys-only)")
    return "\n".join(lines)


def ssh_view(ledger: Any, name: str) -> dict[str, object]:
    """What ``product show`` adds: the key fingerprints and the keys-only flag."""
    access = ledger.ssh_keys.get(name)
    if not access.keys:
        return {"ssh_keys": [], "ssh_keys_only": access.keys_only}
    from .sftp.keys import fingerprints

    return {"ssh_keys": fingerprints(access.keys), "ssh_keys_only": access.keys_only}


def init_host_key(settings: Settings) -> str:
    """Make the SFTP host key under the root unless it exists; the line ``init`` prints."""
    from .sftp.hostkey import ensure_host_key

    path = settings.root / settings.sftp.host_key
    fingerprint, made = ensure_host_key(path)
    what = "SFTP host key created" if made else "SFTP host key"
    return f"{what}: {path} ({fingerprint}); SFTP serves once [sftp] port is set or serve --sftp-port is given"


def host_key_override(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
