"""Message blocks: how a big batch's sendable rows are stored at intake.

Writing one ledger row (plus index entries) per message at intake made a
million-row upload cost seconds of SQLite work before anything else. Rows
that are simply due now (queued, no schedule, no error) are therefore stored
as blocks of up to ``BLOCK_ROWS`` messages, their columns packed as one
Arrow IPC stream per block, and become ``messages`` rows when they are first
leased (or cancelled). A block's ``taken`` counts the messages already made
rows, in block order, so a block is a queue with a cursor:

    rows [0, taken)     are in ``messages`` (their state lives there)
    rows [taken, size)  are queued (002), never leased

Taking rows and advancing ``taken`` happen in one transaction, so a row is
made exactly once. Payloads never change once written, so any process may
cache decoded blocks (several nodes too: see DESIGN.md §12).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
else:  # imported on first use: `product list` and `status` never need them
    pd, pa, pc = lazy_module("pandas"), lazy_module("pyarrow"), lazy_module("pyarrow.compute")

#: Messages per block: small enough that a lease decodes little, large
#: enough that a million rows are a few hundred inserts.
BLOCK_ROWS = 5000

# The columns a block keeps: what a submit and the report need.
_COLUMNS = ("row_no", "destination", "text", "sender", "climsgid", "encoding", "parts", "validity_minutes")


@functools.cache
def _schema() -> pa.Schema:
    """The Arrow schema of a block (built on first use: pyarrow is imported lazily)."""
    return pa.schema([(name, pa.int64() if name in ("row_no", "parts", "validity_minutes") else pa.string()) for name in _COLUMNS])


@functools.cache
def _write_options() -> pa.ipc.IpcWriteOptions:
    # Texts of one campaign repeat a lot: compressed blocks halve what SQLite writes.
    return pa.ipc.IpcWriteOptions(compression="lz4")


@dataclass(frozen=True)
class BlockRows:
    """A decoded block: one Python list per column, in block order."""

    row_no: list[int]
    destination: list[str]
    text: list[str]
    sender: list[str | None]
    climsgid: list[str | None]
    encoding: list[str]
    parts: list[int]
    validity_minutes: list[int | None]

    def __len__(self) -> int:
        return len(self.row_no)


def pack(frame: pd.DataFrame) -> list[tuple[int, int, int, int, bytes]]:
    """Split rule-checked rows into blocks: (first_row, last_row, size, parts, payload) each."""
    table = pa.Table.from_pandas(
        frame.rename(columns={"row": "row_no"})[list(_COLUMNS)], schema=_schema(), preserve_index=False
    )
    blocks = []
    for start in range(0, table.num_rows, BLOCK_ROWS):
        part = table.slice(start, BLOCK_ROWS)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, _schema(), options=_write_options()) as writer:
            writer.write_table(part)
        rows = part.column("row_no")
        blocks.append(
            (rows[0].as_py(), rows[-1].as_py(), part.num_rows, int(pc.sum(part.column("parts")).as_py()),
             sink.getvalue().to_pybytes())
        )
    return blocks


def unpack(payload: bytes) -> BlockRows:
    table = pa.ipc.open_stream(payload).read_all()
    return BlockRows(**{name: table.column(name).to_pylist() for name in _COLUMNS})


class BlockCache:
    """Decoded blocks by id, least recently used evicted; shared by the threads of one process."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, BlockRows] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, block_id: int) -> BlockRows | None:
        with self._lock:
            rows = self._blocks.get(block_id)
            if rows is not None:
                self._blocks.move_to_end(block_id)
            return rows

    def put(self, block_id: int, rows: BlockRows) -> None:
        with self._lock:
            self._blocks[block_id] = rows
            self._blocks.move_to_end(block_id)
            while len(self._blocks) > self.capacity:
                self._blocks.popitem(last=False)

    def forget(self, block_id: int) -> None:
        with self._lock:
            self._blocks.pop(block_id, None)
