"""Product SSH keys: OpenSSH ``authorized_keys`` lines checked, fingerprinted and matched.

Only plain lines (``type base64 [comment]``) are accepted: options such as
``from="…"`` would be a second, partial lock-down beside the product's
``--allow-ip``, so a line with options is refused with a sentence saying so.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh

from .. import codes
from ..errors import InvalidSetting


def _parse(line: str, where: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError):
        pass
    if " ssh-" in line or " ecdsa-" in line or " sk-" in line:
        raise InvalidSetting(
            f"{where}: options before the key are not supported; give 'TYPE BASE64 [COMMENT]' "
            "and limit addresses with --allow-ip",
            code=codes.E_PARAMETERS,
        )
    raise InvalidSetting(
        f"{where} is not an SSH public key: expected an OpenSSH line such as 'ssh-ed25519 AAAA... user@host'",
        code=codes.E_PARAMETERS,
    )


def read_key_lines(text: str, source: str = "key file") -> tuple[str, ...]:
    """The key lines of an ``authorized_keys`` text (blank lines and ``#`` comments dropped), each checked."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = _parse(line, f"{source} line {number}")
        # stored normalised: type and base64 as OpenSSH writes them, then the comment given
        kind, blob = key.export_public_key("openssh").decode().split()[:2]
        comment = key.get_comment()
        lines.append(f"{kind} {blob} {comment}" if comment else f"{kind} {blob}")
    return tuple(lines)


def read_key_file(path: str) -> tuple[str, ...]:
    """``--ssh-key-file FILE``: the checked key lines of FILE; ``''`` means no keys (clears them)."""
    if path == "":
        return ()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidSetting(f"cannot read SSH key file {path}: {exc.strerror}", code=codes.E_PARAMETERS) from None
    except UnicodeDecodeError:
        raise InvalidSetting(f"SSH key file {path} is not text (give the public key, e.g. id_ed25519.pub)", code=codes.E_PARAMETERS) from None
    lines = read_key_lines(text, path)
    if not lines:
        raise InvalidSetting(f"SSH key file {path} holds no key; to remove a product's keys give --ssh-key-file ''", code=codes.E_PARAMETERS)
    return lines


def fingerprints(lines: tuple[str, ...]) -> list[str]:
    """``SHA256:… comment (type)`` for each stored line, as ``ssh-keygen -l`` shows them."""
    shown = []
    for line in lines:
        key = asyncssh.import_public_key(line)
        comment = key.get_comment() or ""
        shown.append(f"{key.get_fingerprint('sha256')} {comment} ({key.get_algorithm()})".replace("  ", " "))
    return shown


def key_listed(lines: tuple[str, ...], offered: asyncssh.SSHKey) -> bool:
    """True when ``offered`` (the client's public key) is one of ``lines``."""
    wanted = offered.public_data
    for line in lines:
        try:
            if asyncssh.import_public_key(line).public_data == wanted:
                return True
        except (asyncssh.KeyImportError, ValueError):
            continue
    return False
