"""The file system a session sees: its home, without links out of it.

pyftpdlib already refuses paths whose real path leaves the home (``..``,
absolute paths, symlinked folders). This adds what a link an operator made
inside a home could still do: files are opened without following a final
symlink and must be regular files with a single link (a hard link to another
product's file, or a FIFO that would block the loop, is refused); listings
hide links and the uploads still in progress; and changing folder never
touches the process's working directory, which every thread shares.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO, Any

from pyftpdlib.exceptions import FilesystemError
from pyftpdlib.filesystems import AbstractedFS

from ..storage import UPLOAD_TEMP_PREFIX


def _refuse(message: str) -> FilesystemError:
    # pyftpdlib replies "550 <message>." for a FilesystemError (an OSError only gets its errno text)
    return FilesystemError(message)


def _safe_opener(path: str, flags: int) -> int:
    # O_TRUNC is applied only after the checks: truncating first would empty
    # the file a hard link points to before we noticed it was one.
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse("Symbolic links are not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse("Only regular files can be transferred")
        if st.st_nlink > 1:
            raise _refuse("Hard-linked files are not served")
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        return [name for name in os.listdir(path) if _visible(path, name)]

    listdirinfo = listdir


def _visible(folder: str, name: str) -> bool:
    if name.startswith(UPLOAD_TEMP_PREFIX):
        return False  # an upload still running: it appears under its name once complete
    try:
        st = os.lstat(os.path.join(folder, name))
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    return not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)
