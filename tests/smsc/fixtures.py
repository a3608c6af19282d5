"""pytest fixtures that run the test SMSC (tests/smsc/server.py) as a real process.

Import into ``tests/conftest.py``::

    from tests.smsc.fixtures import smsc, smsc_factory  # noqa: F401

``smsc_factory(mode, **options)`` starts ``python -m tests.smsc.server`` on
127.0.0.1 with a free port (options become flags: ``receipt_delay=0.1`` ->
``--receipt-delay 0.1``, ``stat=["1=UNDELIV"]`` -> ``--stat 1=UNDELIV``,
``True`` -> a bare flag) and stops every process it started at teardown.
``smsc`` is a ``happy`` one.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_ID = "esme"
PASSWORD = "secret"


class SmscProcess:
    """A running test SMSC and what it recorded."""

    def __init__(self, mode: str, workdir: Path, args: list[str], start_timeout: float = 15.0) -> None:
        self.mode = mode
        self.record = workdir / f"smsc-{mode}-{id(self):x}.jsonl"
        self.log = self.record.with_suffix(".log")
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "tests.smsc.server", "--port", "0", "--mode", mode,
               "--record", str(self.record), "--system-id", SYSTEM_ID, "--password", PASSWORD, *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log_file, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.port = self._read_port(start_timeout)
        self.host = "127.0.0.1"

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"test SMSC did not start: {line!r}; log:\n{self.log.read_text()}")
        return int(line.split()[1])

    def url(self, system_id: str = SYSTEM_ID, password: str = PASSWORD, **options: Any) -> str:
        """An ``smpp://`` URL for this SMSC, with connector options."""
        query = urlencode({k: v for k, v in options.items()}, safe="+")
        return f"smpp://{system_id}:{password}@{self.host}:{self.port}" + (f"?{query}" if query else "")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Recorded events (all, or those of one kind: "submit_sm", "bind", "receipt", ...)."""
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            if not line.endswith("}"):
                continue  # a line being written right now
            event = json.loads(line)
            if kind is None or event.get("event") == kind:
                out.append(event)
        return out

    def submits(self) -> list[dict[str, Any]]:
        return self.events("submit_sm")

    def wait_for(self, predicate: Callable[[SmscProcess], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


def _flags(options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


@pytest.fixture
def smsc_factory(tmp_path: Path) -> Iterator[Callable[..., SmscProcess]]:
    started: list[SmscProcess] = []

    def start(mode: str = "happy", **options: Any) -> SmscProcess:
        process = SmscProcess(mode, tmp_path, _flags(options))
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def smsc(smsc_factory: Callable[..., SmscProcess]) -> SmscProcess:
    return smsc_factory("happy")
