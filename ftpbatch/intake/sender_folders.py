"""The sender's steering folders beside /inbox: /optout and /control (/check is a batch, see checks.py).

* ``/optout/NAME`` adds its numbers to the product's opt-out list (one
  number per line, or a CSV with a ``to``-like column; national numbers take
  the product's dial prefix); ``NAME.remove`` takes them off. Lines that are
  no phone number are listed in ``/reports/NAME.error.txt`` (code 105); the
  others are applied. The file then moves to /archive.
* ``/control/<batch id>.pause|.resume|.cancel`` (empty) is applied and
  removed; an unknown id or verb gets ``/reports/NAME.error.txt``.
* ``/reports/optout.csv`` is the product's list (number, since, source),
  rewritten whenever the ledger's list changes (also by the command line
  or a STOP reply, from whichever process).

Every change goes through the ledger first, so it survives a restart.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from .. import codes
from ..ids import new_batch_id
from ..ledger.protocol import IntakeLedger
from ..models import CHECKED, COMPLETE, REJECTED, Product
from ..parse.columns import ALIASES, header_key, looks_like_phone
from ..report.files import iso
from ..rules.numbers import normalise_list
from ..storage import LocalStorage

log = logging.getLogger(__name__)

OPTOUT_REPORT = "optout.csv"
REMOVE_SUFFIX = ".remove"
#: an opt-out file larger than this is refused (a list of a million numbers is ~15 MB)
MAX_OPTOUT_BYTES = 64 << 20
_TO_NAMES = set(ALIASES["to"])
_SHOWN_BAD_LINES = 5
_FINISHED = {COMPLETE: "complete", REJECTED: "rejected", CHECKED: "a dry run (checked, never sent)"}


class BadNumbers(ValueError):
    """Numbers that are no phone numbers: (line, text as written) each."""

    def __init__(self, bad: list[tuple[int, str]]) -> None:
        self.bad = bad
        shown = ", ".join(f"line {line} ({text!r})" for line, text in bad[:_SHOWN_BAD_LINES])
        more = f" and {len(bad) - _SHOWN_BAD_LINES} more" if len(bad) > _SHOWN_BAD_LINES else ""
        super().__init__(f"{shown}{more} {'is no phone number' if len(bad) == 1 else 'are no phone numbers'} "
                         f"(code {codes.E_DESTINATION})")


def read_numbers(text: str) -> list[tuple[int, str]]:
    """(line, cell) of every number in an opt-out file: one per line, or a CSV's ``to``-like column."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = next((d for d in (",", ";", "\t", "|") if d in first), None)
    if delimiter is None:
        return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    column, start = 0, 0
    if rows and not looks_like_phone(rows[0][0] if rows[0] else ""):
        keys = [header_key(cell) for cell in rows[0]]
        column = next((i for i, key in enumerate(keys) if key in _TO_NAMES), 0)
        start = 1
    return [(n, row[column].strip()) for n, row in enumerate(rows[start:], start + 1)
            if len(row) > column and row[column].strip()]


def normalise_numbers(cells: list[tuple[int, str]], dial_prefix: str | None) -> tuple[list[str], list[tuple[int, str]]]:
    """(E.164 digits, bad (line, text)) of the cells."""
    digits = normalise_list([cell for _, cell in cells], dial_prefix)
    good = [d for d in digits if d is not None]
    bad = [cell for cell, d in zip(cells, digits) if d is None]
    return good, bad


class SenderFolders:
    """Applies /optout and /control files, and keeps every /reports/optout.csv current."""

    def __init__(self, storage: LocalStorage, ledger: IntakeLedger) -> None:
        self.storage = storage
        self.ledger = ledger
        self._written: dict[str, int] = {}  # product -> optouts_version its optout.csv shows

    # --- /optout --------------------------------------------------------
    def optout_file(self, path: Path, product: Product, source: str = "ftp") -> None:
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            return
        if size > MAX_OPTOUT_BYTES:
            self._error(product.name, path.name, f"The opt-out file has {size} bytes, more than the {MAX_OPTOUT_BYTES} "
                        f"allowed (code {codes.E_FILE_TOO_LARGE}): split it into smaller files.")
            self._archive(path, product.name)
            return
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
        good, bad = normalise_numbers(read_numbers(text), product.dial_prefix)
        removing = path.name.lower().endswith(REMOVE_SUFFIX)
        if removing:
            changed = self.ledger.remove_optouts(product.name, good)
        else:
            changed = self.ledger.add_optouts(product.name, good, source)
        verb = "removed from" if removing else "added to"
        log.info("opt-out file %s of %s: %d number(s) %s the list (%d read, %d not numbers)",
                 path.name, product.name, changed, verb, len(good), len(bad))
        if bad:
            self._error(product.name, path.name, f"In {path.name}, {BadNumbers(bad)}: fix them and upload them again; "
                        f"the other {len(good)} number(s) were {'removed from' if removing else 'added to'} the opt-out list.")
        elif not good:
            self._error(product.name, path.name, f"{path.name} holds no phone number (code {codes.E_DESTINATION}): "
                        "put one number per line, or a CSV with a 'to' column.")
        self._archive(path, product.name)
        self.refresh_optout_file(product.name)

    # --- /control -------------------------------------------------------
    def control_file(self, path: Path, product: Product, source: str = "ftp") -> None:
        name = path.name
        batch_id, dot, verb = name.rpartition(".")
        try:
            sentence = self._apply_control(product.name, batch_id if dot else name, verb.lower() if dot else "", source)
        finally:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        if sentence is not None:
            self._error(product.name, name, sentence)

    def _apply_control(self, product: str, batch_id: str, verb: str, source: str) -> str | None:
        """Apply one control; None when done, else the sentence for the error file."""
        if verb not in ("pause", "resume", "cancel"):
            return (f"'{verb or '(none)'}' is not a control (code {codes.E_PARAMETERS}): name the file "
                    f"<batch id>.pause, <batch id>.resume or <batch id>.cancel, e.g. {batch_id or '01J...'}.pause.")
        batch = self.ledger.get_batch(batch_id)
        if batch is None or batch.product != product:
            return (f"There is no batch {batch_id!r} of this product (code {codes.E_PARAMETERS}): use the id from its "
                    "report names in /reports (NAME.<batch id>.summary.json).")
        if batch.state in _FINISHED:
            return f"Batch {batch_id} is {_FINISHED[batch.state]}: there is nothing left to {verb}."
        if verb == "pause":
            if self.ledger.pause_batch(batch.seq, source):
                log.info("batch %s paused by %s (/control)", batch_id, source)
        elif verb == "resume":
            if self.ledger.resume_batch(batch.seq, source):
                log.info("batch %s resumed by %s (/control)", batch_id, source)
        else:
            cancelled = self.ledger.cancel_batch(batch.seq, source)
            log.info("batch %s cancelled by %s (/control): %d message(s) not sent yet are 006", batch_id, source, cancelled)
        return None

    # --- /reports/optout.csv --------------------------------------------
    def refresh_optout_files(self) -> None:
        """Rewrite the optout.csv of every product whose list changed since it was written."""
        for product in self.ledger.list_products():
            self.refresh_optout_file(product.name)

    def refresh_optout_file(self, product: str) -> None:
        version = self.ledger.optouts_version(product)
        target = self.storage.reports(product) / OPTOUT_REPORT
        if self._written.get(product) == version and target.exists():
            return
        entries = self.ledger.list_optouts(product)
        with self.storage.atomic_writer(target) as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["number", "since", "source"])
            writer.writerows((entry.number, iso(entry.since), entry.source) for entry in entries)
        self._written[product] = version

    # --- helpers --------------------------------------------------------
    def _error(self, product: str, name: str, sentence: str) -> None:
        log.info("%s of %s: %s", name, product, sentence)
        with self.storage.atomic_writer(self.storage.reports(product) / f"{name}.error.txt") as fh:
            fh.write(sentence + "\n")

    def _archive(self, path: Path, product: str) -> None:
        try:
            self.storage.archive(path, product, path.name, new_batch_id())
        except FileNotFoundError:
            pass
