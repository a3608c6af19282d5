"""``ftpbatch process FILE --product P``: one file through the whole pipeline, here and now.

Beside cli.py (which checks the arguments and builds the settings): a
gateway without FTP or inbox watching takes the file, dispatches it and
writes its reports; this waits until the final report is written, showing
progress on a terminal, and prints the batch's summary.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import NotFound
from .heap import collect_less_often

if TYPE_CHECKING:
    from .models import Batch
    from .service import Gateway


def run(settings: Settings, file: Path, product: str, timeout: float | None, prog: str) -> int:
    """Process ``file`` for ``product``; exit 0 only if the batch completed."""
    from .report.files import Counts, summary_document
    from .report.progress import Progress
    from .service import Gateway

    collect_less_often()
    gateway = Gateway(settings, ftp=False, watch_inboxes=False, node_id=f"{settings.node_id}-process-{os.getpid()}")
    if gateway.ledger.get_product(product) is None:
        gateway.ledger.close()
        raise NotFound(f"no product named {product!r}; create it with '{prog} product add'")
    gateway.start()
    try:
        batch = gateway.submit_file(file, product)
        progress = Progress(sys.stderr)
        while True:
            finished = gateway.wait_finished(batch.id, timeout=0.2)
            if finished.state in ("complete", "rejected") and gateway.ledger.report_is_current(finished.seq):
                break
            if timeout is not None and progress.elapsed > timeout:
                break
            if progress.wants_counts():
                started = time.monotonic()
                progress.show(Counts.tally(gateway.ledger.status_counts(finished.seq)))
                progress.counted(time.monotonic() - started)
        # The final summary.json says it already: counting a million rows again took a second.
        document = final_summary(gateway, finished)
        if document is None:  # timed out, or the file went missing
            counts = Counts.tally(gateway.ledger.status_counts(finished.seq))
            document = summary_document(finished, counts)
        else:
            counts = Counts(**document["counts"], parts=document["parts"])
        progress.show(counts)
        progress.done()
    finally:
        gateway.stop()
    print(json.dumps(document, indent=2))
    return 0 if finished.state == "complete" else 1


def final_summary(gateway: Gateway, batch: Batch) -> dict[str, Any] | None:
    """The summary.json the reporter wrote for ``batch`` in its final state, if it is there."""
    from .report.files import read_summary

    if batch.state not in ("complete", "rejected") or not gateway.ledger.report_is_current(batch.seq):
        return None
    return read_summary(gateway.storage, batch)
