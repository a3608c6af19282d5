"""Test helpers: a real ``ftpbatch serve`` process on loopback, and ways to wait for reports."""

from __future__ import annotations

import csv
import ftplib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpbatch.ledger import Ledger
from ftpbatch.models import Product, parse_allow_ip
from ftpbatch.passwords import hash_password
from ftpbatch.storage import LocalStorage

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"

# Fast settings so tests wait milliseconds, not seconds.
TEST_ENV = {
    "FTPBATCH_FTP_AUTH_FAILED_DELAY": "0.05",
    "FTPBATCH_INTAKE_SETTLE_SECONDS": "0.1",
    "FTPBATCH_INTAKE_RESCAN_SECONDS": "1",
    "FTPBATCH_REPORT_INTERVAL": "0.05",
}


@dataclass
class Account:
    name: str
    password: str


def add_product(root: Path, name: str, password: str, allow_ip: str = "", ledger_url: str | None = None,
                **fields: Any) -> Account:
    ledger = Ledger(ledger_url or root / "ftpbatch.db")
    try:
        ledger.add_product(Product(name, hash_password(password), allow_ip=parse_allow_ip(allow_ip), **fields))
    finally:
        ledger.close()
    LocalStorage(root).ensure_home(name)
    return Account(name, password)


class ServerProcess:
    """``python -m ftpbatch serve`` in a subprocess, on 127.0.0.1 and a free port."""

    def __init__(self, root: Path, *extra: str, env: dict[str, str] | None = None, group: bool = False,
                 ledger: str | None = None) -> None:
        self.root = root
        #: a PostgreSQL ledger's URL (``ftpbatch --ledger URL serve``); None: the root's SQLite file
        self.ledger = ledger
        #: run in a process group of its own, so kill_group() takes its helpers down with it
        self.group = group
        self.extra = extra
        self.env = {**os.environ, **TEST_ENV, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.log_path = root / "server.log"

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "ftpbatch.db").exists() and not (self.root / "ftpbatch.toml").exists():
            Ledger(self.ledger or self.root / "ftpbatch.db").close()  # what `init` makes; serve refuses a root without it
            if self.ledger:
                (self.root / "ftpbatch.toml").write_text("")
        self._log = self.log_path.open("a")
        ledger = ("--ledger", self.ledger) if self.ledger else ()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftpbatch", "--root", str(self.root), *ledger, "serve", "--ftp-host", "127.0.0.1", "--ftp-port", "0", *self.extra],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=self.env,
            cwd=REPO,
            start_new_session=self.group,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            if "serving FTP on" in line:
                self.port = int(line.split("serving FTP on ")[1].split()[0].rsplit(":", 1)[1])
                return self
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the server and any helper it started); needs ``group=True``."""
        assert self.proc is not None and self.group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.stop(signal.SIGKILL)

    def ftp(self, account: Account, source_ip: str = "127.0.0.1") -> ftplib.FTP:
        client = ftplib.FTP(timeout=10)
        client.connect(self.host, self.port, source_address=(source_ip, 0))
        try:
            client.login(account.name, account.password)
        except BaseException:
            client.close()
            raise
        return client

    def url(self, account: Account, path: str = "/") -> str:
        return f"ftp://{account.name}:{account.password}@{self.host}:{self.port}{path}"

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_summary(root: Path, product: str, file_name: str) -> dict[str, Any] | None:
    reports = root / "homes" / product / "reports"
    found = sorted(reports.glob(f"{file_name}.*.summary.json"))
    if not found:
        return None
    return json.loads(found[-1].read_text())


def wait_for_summary(
    root: Path, product: str, file_name: str, states: tuple[str, ...] = ("complete", "rejected"), timeout: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    summary = None
    while time.monotonic() < deadline:
        summary = find_summary(root, product, file_name)
        if summary is not None and summary["state"] in states:
            return summary
        time.sleep(0.02)
    raise AssertionError(f"no summary in state {states} for {file_name} within {timeout}s; last: {summary}")


def read_report(root: Path, product: str, summary: dict[str, Any]) -> list[dict[str, str]]:
    path = root / "homes" / product / "reports" / f"{summary['file']}.{summary['batch']}.report.csv"
    return parse_report(path.read_text(encoding="utf-8"))


def parse_report(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def upload(client: ftplib.FTP, name: str, data: bytes, folder: str = "/inbox") -> str:
    return client.storbinary(f"STOR {folder}/{name}", io.BytesIO(data))


_BARRIERS = iter(range(1, 1_000_000))


def intake_barrier(server: "ServerProcess", account: "Account") -> None:
    """Upload one small file and wait until its report is complete.

    The intake claims finished uploads in the order they arrive, so once this
    one is through, anything earlier that the server was going to take has
    been taken (and is in the ledger). Use it before asserting that something
    did *not* happen, instead of sleeping and hoping.
    """
    name = f"barrier-{os.getpid()}-{next(_BARRIERS)}.csv"
    with server.ftp(account) as client:
        upload(client, name, f"to,text\n07700900001,barrier {name}\n".encode())
    wait_for_summary(server.root, account.name, name, ("complete",))


def download(client: ftplib.FTP, path: str) -> bytes:
    buf = io.BytesIO()
    client.retrbinary(f"RETR {path}", buf.write)
    return buf.getvalue()
