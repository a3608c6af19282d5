"""The folders of a product's home and what a session may do in each.

Permission letters (pyftpdlib's, used by both protocols): e = enter a folder,
l = list, r = read (download), a = append, d = delete, f = rename, w = write
(upload). The home itself may only be entered and listed; the folders in it
are never removed, renamed or written to as such.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER_PERMS = {
    "": "el",
    "inbox": "elradfw",
    "reports": "elrd",
    "archive": "elr",
    # dry runs, opt-out lists and batch controls: uploads, like /inbox (DESIGN.md §3, README)
    "check": "elradfw",
    "optout": "elradfw",
    "control": "elradfw",
}
#: where a session may upload (and rename inside): each folder is handled by intake in its own way
UPLOAD_FOLDERS = ("inbox", "check", "optout", "control")
#: what a refused upload elsewhere is told (FTP adds its reply code)
UPLOADS_ONLY_THERE = (
    "Uploads are only accepted in /inbox, /check, /optout and /control: upload there, e.g. 'put batch.csv /inbox/batch.csv'."
)


def perms_at(home: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """The letters allowed at ``path`` (a real file-system path) for the product living in ``home``."""
    home_real = os.path.realpath(home)
    real = os.path.realpath(path)
    if real == home_real:
        return FOLDER_PERMS[""]
    relative = os.path.relpath(real, home_real)
    if relative.startswith(".."):
        return ""
    parts = Path(relative).parts
    if len(parts) == 1:
        return FOLDER_PERMS[""] if parts[0] in FOLDER_PERMS else ""
    return FOLDER_PERMS.get(parts[0], "")


def directly_in(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names an entry directly inside ``folder`` (links resolved)."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(folder)


def upload_folder(home: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """The upload folder (``inbox``, ``check``, ...) directly holding ``path``, else None."""
    parent = os.path.dirname(os.path.realpath(path))
    for name in UPLOAD_FOLDERS:
        if parent == os.path.realpath(os.path.join(home, name)):
            return name
    return None
