"""The data root's folder layout, reached through one small interface.

Everything that moves a batch file goes through :class:`LocalStorage`, so a
shared or object store can replace it later (DESIGN.md §12.5)::

    <root>/homes/<product>/inbox/     uploads and local drops
    <root>/homes/<product>/reports/   report files (written atomically)
    <root>/homes/<product>/archive/   processed originals
    <root>/homes/<product>/check/     dry runs: checked and reported, never sent
    <root>/homes/<product>/optout/    numbers to add to (or, NAME.remove, take off) the opt-out list
    <root>/homes/<product>/control/   <batch id>.pause | .resume | .cancel
    <root>/spool/<product>/<batch id>--<name>   claimed, not visible by FTP
    <root>/spool/<product>/check/<batch id>--<name>   a claimed dry run
    <root>/cache/reports/<batch id>/   what the last report.csv rewrite rendered, chunk by chunk
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .ids import new_batch_id

log = logging.getLogger(__name__)

HOME_FOLDERS = ("inbox", "reports", "archive", "check", "optout", "control")
#: the folders a sender uploads into; each is handled by intake in its own way
UPLOAD_FOLDERS = ("inbox", "check", "optout", "control")
#: the spool's sub-folder for dry runs (a crash between claim and record must not make one a batch that sends)
_CHECK_SPOOL = "check"
_ID_LENGTH = 26
_SEPARATOR = "--"

# Names that are never processed: uploads in progress by convention (DESIGN §3).
_TEMP_SUFFIXES = (".part", ".tmp", ".filepart", ".partial")
#: FTP uploads are written as ``.upload-<random>-<name>`` and renamed when complete.
UPLOAD_TEMP_PREFIX = ".upload-"


def is_temporary_name(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(_TEMP_SUFFIXES)


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.homes = root / "homes"
        self.spool = root / "spool"
        self.cache = root / "cache"

    def prepare(self) -> None:
        self.homes.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(parents=True, exist_ok=True)

    # --- homes ---------------------------------------------------------
    def home(self, product: str) -> Path:
        return self.homes / product

    def inbox(self, product: str) -> Path:
        return self.homes / product / "inbox"

    def reports(self, product: str) -> Path:
        return self.homes / product / "reports"

    def archive_dir(self, product: str) -> Path:
        return self.homes / product / "archive"

    def ensure_home(self, product: str) -> Path:
        for folder in HOME_FOLDERS:
            (self.homes / product / folder).mkdir(parents=True, exist_ok=True)
        return self.home(product)

    def folder(self, product: str, name: str) -> Path:
        return self.homes / product / name

    def inbox_owner(self, path: Path) -> str | None:
        """The product whose inbox directly holds ``path``, else None."""
        owner = self.upload_owner(path)
        return owner[0] if owner is not None and owner[1] == "inbox" else None

    def upload_owner(self, path: Path) -> tuple[str, str] | None:
        """(product, folder) when ``path`` sits directly in one of a product's upload folders, else None."""
        try:
            relative = path.relative_to(self.homes)
        except ValueError:
            return None
        parts = relative.parts
        if len(parts) == 3 and parts[1] in UPLOAD_FOLDERS:
            return parts[0], parts[1]
        return None

    def pending_files(self) -> Iterator[Path]:
        """Every candidate file in every upload folder (for rescans)."""
        for name in UPLOAD_FOLDERS:
            for folder in self.homes.glob(f"*/{name}"):
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file(follow_symlinks=False) and not is_temporary_name(entry.name):
                            yield Path(entry.path)

    # --- spool ---------------------------------------------------------
    def claim(self, path: Path, product: str, dry_run: bool = False) -> tuple[str, Path] | None:
        """Atomically move ``path`` into the spool; None if someone else got it first.

        A dry run (from /check) goes to the spool's ``check/`` folder.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            # A symlink would make ingest read whatever it points at (another
            # product's files); a FIFO would block it forever.
            log.warning("not claiming %s: only regular files are processed, not links, pipes or devices", path)
            return None
        batch_id = new_batch_id()
        folder = self.spool / product / _CHECK_SPOOL if dry_run else self.spool / product
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{batch_id}{_SEPARATOR}{path.name}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return batch_id, target

    def spool_copy(self, source: Path, product: str) -> tuple[str, Path]:
        """Copy an operator's file into the spool as a new claim; the original stays put."""
        batch_id = new_batch_id()
        folder = self.spool / product
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{batch_id}{_SEPARATOR}{source.name}"
        hidden = folder / f".{batch_id}.copying"
        shutil.copyfile(source, hidden)
        os.replace(hidden, target)  # only whole copies ever appear under a spool name
        return batch_id, target

    def spooled_files(self) -> Iterator[tuple[str, str, str, Path, bool]]:
        """(batch id, product, original name, path, dry run) of every file in the spool."""
        for folder in sorted(p for p in self.spool.iterdir() if p.is_dir()):
            for dry_run, where in ((False, folder), (True, folder / _CHECK_SPOOL)):
                if not where.is_dir():
                    continue
                for path in sorted(where.iterdir()):
                    name = path.name
                    if len(name) > _ID_LENGTH + len(_SEPARATOR) and name[_ID_LENGTH:].startswith(_SEPARATOR):
                        yield name[:_ID_LENGTH], folder.name, name[_ID_LENGTH + len(_SEPARATOR):], path, dry_run

    def archive(self, spooled: Path, product: str, name: str, batch_id: str) -> Path:
        """Move a processed original to the product's ``archive/``, never overwriting."""
        folder = self.archive_dir(product)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if target.exists():
            stem, dot, suffix = name.partition(".")
            target = folder / (f"{stem}.{batch_id}{dot}{suffix}" if dot else f"{name}.{batch_id}")
        os.replace(spooled, target)
        return target

    # --- reports -------------------------------------------------------
    def report_cache(self, batch_id: str) -> Path:
        """Where a batch's report chunks are kept between rewrites (not visible by FTP)."""
        folder = self.cache / "reports" / batch_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def drop_report_cache(self, batch_id: str) -> None:
        shutil.rmtree(self.cache / "reports" / batch_id, ignore_errors=True)

    @contextlib.contextmanager
    def atomic_writer(self, path: Path, mode: str = "w") -> Iterator[IO]:
        """Write to a hidden temporary file beside ``path``, then rename over it.

        A client downloading a report never sees half a file; the temporary
        name starts with '.' so it is never mistaken for an upload either.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            text = "b" not in mode
            with os.fdopen(fd, mode, encoding="utf-8" if text else None, newline="" if text else None) as fh:
                yield fh
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
