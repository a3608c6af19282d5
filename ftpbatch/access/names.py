"""File names a session may use: no control characters, no reserved prefix, not too long.

Each check returns a sentence for the user or None; the protocol adds its own
reply code (FTP's 501/553, SFTP's status codes).
"""

from __future__ import annotations

from ..storage import UPLOAD_TEMP_PREFIX


def has_control_characters(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


CONTROL_CHARACTERS = "File names may not contain control characters: rename the file and try again."
RESERVED = f"Names starting with '{UPLOAD_TEMP_PREFIX}' are reserved for uploads in progress: use another name."


def too_long(name: str, limit: int) -> str | None:
    if len(name.encode("utf-8", "surrogatepass")) > limit:
        return f"File name too long: at most {limit} bytes (UTF-8) are accepted; use a shorter name."
    return None


def is_reserved(name: str) -> bool:
    """Hidden upload files (``.upload-…``) are the server's own: never named or shown to a client."""
    return name.startswith(UPLOAD_TEMP_PREFIX)


def naming_refusal(name: str, limit: int) -> str | None:
    """Why a session may not create ``name`` (a base name), or None."""
    if has_control_characters(name):
        return CONTROL_CHARACTERS
    if is_reserved(name):
        return RESERVED
    return too_long(name, limit)
