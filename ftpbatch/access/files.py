"""Files as a session sees them: no links followed, no special files, no uploads in progress.

An operator (or a bug) could leave a symlink, a hard link to another
product's file, or a FIFO inside a home. Files are therefore opened without
following a final symlink and must be regular files with a single link;
listings hide links and the hidden files of uploads still running.
"""

from __future__ import annotations

import errno
import os
import stat

from ..storage import UPLOAD_TEMP_PREFIX


class RefusedFile(OSError):
    """A file a session may not open; ``str()`` is the sentence for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPERM, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def safe_open(path: str | bytes, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses symlinks, special files and hard-linked files (:class:`RefusedFile`)."""
    # O_TRUNC is applied only after the checks: truncating first would empty
    # the file a hard link points to before we noticed it was one.
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedFile("Symbolic links are not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedFile("Only regular files can be transferred")
        if st.st_nlink > 1:
            raise RefusedFile("Hard-linked files are not served")
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
        if flags & os.O_NONBLOCK == 0:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def visible(folder: str, name: str) -> bool:
    """Whether a listing of ``folder`` shows ``name``."""
    if name.startswith(UPLOAD_TEMP_PREFIX):
        return False  # an upload still running: it appears under its name once complete
    try:
        st = os.lstat(os.path.join(folder, name))
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    if stat.S_ISREG(st.st_mode):
        return st.st_nlink == 1
    return stat.S_ISDIR(st.st_mode)  # no FIFOs, sockets or devices
