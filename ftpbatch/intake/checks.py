"""Dry runs (/check): a file checked exactly as a batch would be, reported, never sent.

The rules' output is written straight to the batch's ``report.csv`` (no
message reaches the ledger, so nothing can be leased, and usage never sees
it); ``summary.json`` follows once the ledger says ``checked``. Each row
shows its destination as it would be sent, its parts and encoding, and the
status it would get at intake (``002`` / ``011``, or ``005`` with the error
of a rejected row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from .. import codes
from ..models import Batch
from ..report.files import Counts, neutralise, report_names, summary_document
from ..storage import LocalStorage
from .readahead import read_ahead

if TYPE_CHECKING:
    import pandas as pd

#: the columns of a checked batch's report.csv
CHECK_COLUMNS = [
    "row", "to", "climsgid", "parts", "encoding", "status", "status_text", "error_code", "error_text", "note",
]
_WOULD = {codes.QUEUED: "would be sent", codes.SCHEDULED: "would be sent at its time", codes.ERROR: "error with message"}


@dataclass(frozen=True)
class CheckCounts:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    parts: int = 0

    def add(self, frame: pd.DataFrame) -> CheckCounts:
        rejected = int((frame["status"] == codes.ERROR).sum())
        parts = int(frame.loc[frame["status"] != codes.ERROR, "parts"].sum())
        return CheckCounts(self.rows + len(frame), self.accepted + len(frame) - rejected, self.rejected + rejected,
                           self.parts + parts)


def _check_frame(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    status = frame["status"].astype(str)
    return pd.DataFrame({
        "row": frame["row"],
        "to": neutralise(frame["destination"]),
        "climsgid": neutralise(frame["climsgid"]),
        "parts": frame["parts"],
        "encoding": frame["encoding"].astype(str),
        "status": status,
        "status_text": status.map(_WOULD).fillna(""),
        "error_code": frame["error_code"].fillna("").astype(str),
        "error_text": neutralise(frame["error_text"]),
        "note": neutralise(frame["note"]) if "note" in frame.columns else "",
    })[CHECK_COLUMNS]


def write_check_report(storage: LocalStorage, batch: Batch, checked: Iterable[pd.DataFrame], name: str) -> CheckCounts:
    """Write the dry run's report.csv from the rule-checked chunks; returns its counts."""
    _, csv_name = report_names(batch)
    counts = CheckCounts()
    with storage.atomic_writer(storage.reports(batch.product) / csv_name) as fh:
        fh.write(",".join(CHECK_COLUMNS) + "\n")
        for frame in read_ahead(iter(checked), name=name):
            if len(frame):
                counts = counts.add(frame)
                _check_frame(frame).to_csv(fh, header=False, index=False, lineterminator="\n")
    return counts


def write_check_summary(storage: LocalStorage, batch: Batch, counts: CheckCounts) -> None:
    """The dry run's summary.json: state ``checked`` and what the batch would be."""
    import json

    summary_name, _ = report_names(batch)
    tally = Counts(rows=counts.rows, accepted=counts.accepted, rejected=counts.rejected, queued=0, scheduled=0,
                   submitted=0, delivered=0, failed=0, cancelled=0, expired=0, receipt_timeouts=0,
                   possible_duplicates=0, parts=counts.parts)
    document = summary_document(batch, tally)
    document["dry_run"] = True
    with storage.atomic_writer(storage.reports(batch.product) / summary_name) as fh:
        json.dump(document, fh, indent=2)
        fh.write("\n")
