"""The SFTP file operations of one logged-in product: the FTP rules, in SFTP's terms.

Every client path is mapped into the product's home by asyncssh's ``chroot`` mapping (``map_path``:
``..`` and absolute paths end at the home's root) before these methods see
it. On top of that, what a session may do is the FTP side's: the folder
permissions of :mod:`ftpbatch.access.folders`, the names of
:mod:`ftpbatch.access.names`, files opened without following links
(:mod:`ftpbatch.access.files`); no links, no folders made or removed, no
attribute changes.

Uploads are atomic as on FTP: a file is written under a hidden name and
renamed into ``/inbox`` only when the client closes it (SSH_FXP_CLOSE). A
session that ends with the file still open (the client was killed, the
connection dropped) leaves nothing behind: asyncssh then closes the handle
itself, from its clean-up, and :meth:`ProductSFTPServer.close` tells the two
apart. ``.part`` (and the other temporary names) are written in place and
submitted by the client's rename, as on FTP. ``max_file_bytes``, the quota
and the free-disk floor are counted on every write, through the same
:class:`~ftpbatch.security.storage_guard.UploadBudget` FTP uses.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import asyncssh
from asyncssh.constants import FXF_APPEND, FXF_CREAT, FXF_EXCL, FXF_READ, FXF_TRUNC, FXF_WRITE

from .. import codes
from ..access import names
from ..access.files import RefusedFile, safe_open, visible
from ..access.folders import UPLOADS_ONLY_THERE, perms_at, upload_folder
from ..access.login import Login
from ..security.guard import Guard
from ..security.storage_guard import UploadBudget
from ..storage import UPLOAD_TEMP_PREFIX, is_temporary_name

log = logging.getLogger(__name__)

UPLOADS_ONLY_IN_INBOX = UPLOADS_ONLY_THERE


@dataclass(frozen=True)
class SessionContext:
    """What every SFTP session of one server shares."""

    guard: Guard
    #: Called with (final path, product, "sftp") when an upload is complete and in place.
    on_upload: Callable[[Path, str, str], None]
    max_name_bytes: int


@dataclass
class OpenFile:
    fd: int
    path: str  # where the bytes go (the hidden name for a direct upload)
    final: str | None = None  # set for a direct upload: renamed here when the client closes it
    budget: UploadBudget | None = None
    cut: str | None = None
    closed: bool = False
    written: int = field(default=0)


def _without_ftp_code(reply: str) -> str:
    """The budget's sentences start with an FTP reply code ("552 Transfer cut: ..."): SFTP has its own."""
    head, _, rest = reply.partition(" ")
    return rest if head.isdigit() else reply


def _closed_by_client() -> bool:
    """True when asyncssh calls ``close`` for the client's SSH_FXP_CLOSE, not from the clean-up of a dead session.

    asyncssh closes the handles a session left open with the same ``close``
    call; only the caller tells the two apart (``_process_close`` versus
    ``_cleanup``). tests/test_sftp.py drops a channel mid-file with
    asyncssh's client, so a change of asyncssh's internals fails there.
    """
    caller = sys._getframe(2).f_code.co_name  # 0: here, 1: ProductSFTPServer.close, 2: asyncssh
    return caller == "_process_close"


_RENAMES_ONLY = "Files can only be renamed inside /inbox, /check, /optout and /control."


class ProductSFTPServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, login: Login, context: SessionContext) -> None:
        super().__init__(chan, chroot=login.home.encode())
        self.login = login
        self.product = login.product
        self.context = context
        self.home = login.home

    # --- paths ---------------------------------------------------------
    def _local(self, path: bytes) -> str:
        """The file-system path of a client's path (asyncssh's chroot mapping: never above the home)."""
        if names.has_control_characters(os.fsdecode(path)):
            raise asyncssh.SFTPInvalidFilename(names.CONTROL_CHARACTERS)
        return os.fsdecode(self.map_path(path))

    def _may(self, letter: str, path: bytes) -> str:
        local = self._local(path)
        if names.is_reserved(os.path.basename(local.rstrip("/"))):
            raise asyncssh.SFTPNoSuchFile("No such file")
        if letter not in perms_at(self.home, local):
            raise asyncssh.SFTPPermissionDenied(self._refusal(letter, local))
        return local

    def _refusal(self, letter: str, local: str) -> str:
        if letter in "wa":
            return UPLOADS_ONLY_IN_INBOX
        if letter == "f":
            return _RENAMES_ONLY
        if letter == "d":
            return "Files can only be deleted in /inbox, /check, /optout, /control and /reports."
        return "Permission denied."

    def _new_name(self, local: str) -> None:
        refusal = names.naming_refusal(os.path.basename(local), self.context.max_name_bytes)
        if refusal:
            raise asyncssh.SFTPInvalidFilename(refusal)

    # --- files ---------------------------------------------------------
    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> OpenFile:
        if not pflags & (FXF_WRITE | FXF_APPEND):
            local = self._may("r", path)
            return (OpenFile(self._safe_open(local, os.O_RDONLY), local))
        local = self._may("w", path)
        if upload_folder(self.home, local) is None:
            raise asyncssh.SFTPPermissionDenied(UPLOADS_ONLY_IN_INBOX)
        self._new_name(local)
        refusal = self.context.guard.disk.upload_refusal(self.product)
        if refusal:
            raise asyncssh.SFTPQuotaExceeded(_without_ftp_code(refusal))
        flags = (os.O_RDWR if pflags & FXF_READ else os.O_WRONLY) | os.O_CREAT
        if is_temporary_name(os.path.basename(local)):
            # the client renames it when done (DESIGN §3); resuming it is fine
            if pflags & FXF_TRUNC:
                flags |= os.O_TRUNC
            if pflags & FXF_EXCL:
                flags |= os.O_EXCL
            fd = self._safe_open(local, flags)
            offset = os.fstat(fd).st_size
            return (OpenFile(fd, local, budget=self.context.guard.disk.budget(self.product, offset)))
        if pflags & FXF_APPEND or not pflags & (FXF_TRUNC | FXF_CREAT):
            raise asyncssh.SFTPOpUnsupported(
                "Appending or resuming is only possible for temporary names (.part, .tmp, ...): "
                "upload as NAME.part, then rename it to NAME."
            )
        if pflags & FXF_EXCL and os.path.lexists(local):
            raise asyncssh.SFTPFileAlreadyExists("File already exists")
        # Written under a hidden name (never claimed) and renamed only once the client closed it.
        hidden = os.path.join(os.path.dirname(local), f"{UPLOAD_TEMP_PREFIX}{secrets.token_hex(6)}-{os.path.basename(local)}")
        fd = self._safe_open(hidden, flags | os.O_EXCL)
        return (OpenFile(fd, hidden, final=local, budget=self.context.guard.disk.budget(self.product)))

    def _safe_open(self, local: str, flags: int) -> int:
        try:
            return safe_open(local, flags, 0o644)
        except RefusedFile as refusal:
            raise asyncssh.SFTPPermissionDenied(refusal.message) from None
        except IsADirectoryError:
            raise asyncssh.SFTPFailure("That is a folder, not a file") from None

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        handle = self._handle(file_obj)
        return os.pread(handle.fd, size, offset)

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        handle = self._handle(file_obj)
        if handle.cut is not None:
            raise asyncssh.SFTPQuotaExceeded(handle.cut)
        if handle.budget is None:
            raise asyncssh.SFTPPermissionDenied("This file was opened for reading")
        reply = handle.budget.add(len(data))
        limit = self.product.max_file_bytes
        if reply is None and limit is not None and offset + len(data) > limit:
            reply = handle.budget.cut = (
                f"552 Transfer cut: the file is larger than the {limit} bytes allowed for this product "
                f"(code {codes.E_FILE_TOO_LARGE}); split it into smaller files."
            )
        if reply is not None:
            handle.cut = _without_ftp_code(reply)
            log.info("SFTP upload cut for %r: %s", self.product.name, handle.cut)
            self._discard(handle, over_limit=True)
            raise asyncssh.SFTPQuotaExceeded(handle.cut)
        written = os.pwrite(handle.fd, data, offset)
        handle.written += written
        return written

    def close(self, file_obj: object) -> None:
        handle = self._handle(file_obj, allow_closed=True)
        by_client = _closed_by_client()
        if handle.closed:
            if handle.cut is not None and by_client:
                raise asyncssh.SFTPQuotaExceeded(handle.cut)
            return
        if handle.budget is None:  # a download
            self._close_fd(handle)
            return
        if not by_client:
            log.info("SFTP session of %r ended with %s still open: discarded", self.product.name, os.path.basename(handle.final or handle.path))
            self._discard(handle, over_limit=False)
            return
        self._close_fd(handle)
        handle.budget.close(kept=True)
        if handle.final is not None:
            os.replace(handle.path, handle.final)
            self._submitted(handle.final)
        # a temporary name written in place: the client's rename submits it

    def _submitted(self, final: str) -> None:
        log.info("SFTP upload by %r complete: %s", self.product.name, os.path.basename(final))
        self.context.on_upload(Path(final), self.product.name, "sftp")

    def _discard(self, handle: OpenFile, over_limit: bool) -> None:
        self._close_fd(handle)
        if handle.budget is not None:
            handle.budget.close(kept=False)
        # our hidden file goes; so does a .part the client wrote itself when it
        # went over a limit (resuming it could only go over again)
        if handle.final is not None or over_limit:
            try:
                os.remove(handle.path)
            except FileNotFoundError:
                pass

    def _close_fd(self, handle: OpenFile) -> None:
        if not handle.closed:
            handle.closed = True
            os.close(handle.fd)

    def _handle(self, file_obj: object, allow_closed: bool = False) -> OpenFile:
        if not isinstance(file_obj, OpenFile) or (handle := file_obj).closed and not allow_closed:
            raise asyncssh.SFTPFailure("This file is closed")
        return handle

    def fstat(self, file_obj: object) -> os.stat_result:
        return os.fstat(self._handle(file_obj).fd)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        pass  # times and modes are the server's; accepted and ignored (OpenSSH's put -p sends them)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._may("l", path)

    lsetstat = setstat

    # --- names ---------------------------------------------------------
    def format_user(self, uid: int | None) -> str:
        return self.product.name  # never the server's account names

    def format_group(self, gid: int | None) -> str:
        return self.product.name

    def listdir(self, path: bytes) -> list[bytes]:
        local = self._may("l", path)
        if not os.path.isdir(local) or os.path.islink(local):
            raise asyncssh.SFTPNoSuchFile("No such folder")
        return [os.fsencode(n) for n in sorted(os.listdir(local)) if visible(local, n)]

    def lstat(self, path: bytes) -> os.stat_result:
        local = self._local(path)
        if os.path.realpath(local) != os.path.realpath(self.home):
            self._may("l", path)
            if not visible(os.path.dirname(local), os.path.basename(local)):
                raise asyncssh.SFTPNoSuchFile("No such file")
        return os.lstat(local)

    stat = lstat  # links are never followed, so stat and lstat agree

    def remove(self, path: bytes) -> None:
        local = self._may("d", path)
        if not visible(os.path.dirname(local), os.path.basename(local)):
            raise asyncssh.SFTPNoSuchFile("No such file")
        os.remove(local)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._may("f", oldpath), self._may("f", newpath)
        if not visible(os.path.dirname(old), os.path.basename(old)) or not os.path.isfile(old):
            raise asyncssh.SFTPNoSuchFile("No such file")
        if upload_folder(self.home, old) is None or upload_folder(self.home, new) is None:
            raise asyncssh.SFTPPermissionDenied(_RENAMES_ONLY)
        self._new_name(new)
        os.replace(old, new)
        if not is_temporary_name(os.path.basename(new)):
            self._submitted(new)

    posix_rename = rename

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPPermissionDenied("Folders cannot be made: upload into /inbox.")

    def rmdir(self, path: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Folders cannot be removed.")

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("No such link")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links cannot be made.")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links cannot be made.")

    def statvfs(self, path: bytes) -> Any:
        raise asyncssh.SFTPOpUnsupported("Not supported")

    def fstatvfs(self, file_obj: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("Not supported")
