"""The file system a session sees: its home, without links out of it.

pyftpdlib already refuses paths whose real path leaves the home (``..``,
absolute paths, symlinked folders). This adds what a link an operator made
inside a home could still do: files are opened without following a final
symlink and must be regular files with a single link (a hard link to another
product's file, or a FIFO that would block the loop, is refused); listings
hide links and the uploads still in progress (both in :mod:`ftpbatch.access.files`,
shared with SFTP); and changing folder never touches the process's working
directory, which every thread shares.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO, Any

from pyftpdlib.exceptions import FilesystemError
from pyftpdlib.filesystems import AbstractedFS

from ..access.files import RefusedFile, safe_open, visible


def _safe_opener(path: str, flags: int) -> int:
    try:
        return safe_open(path, flags | os.O_NONBLOCK)
    except RefusedFile as refusal:
        # pyftpdlib replies "550 <message>." for a FilesystemError (an OSError only gets its errno text)
        raise FilesystemError(refusal.message) from None


class GatewayFS(AbstractedFS):
    # Listings never disclose where a link points (it would show server paths).
    readlink = None

    def open(self, filename: str, mode: str) -> IO[Any]:
        return open(filename, mode, opener=_safe_opener)

    def chdir(self, path: str) -> None:
        # pyftpdlib's chdir calls os.chdir: the working directory of every thread.
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
        self.cwd = self.fs2ftp(path)

    def listdir(self, path: str) -> list[str]:
        return [name for name in os.listdir(path) if visible(path, name)]

    listdirinfo = listdir
