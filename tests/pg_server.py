"""A real PostgreSQL server for tests and benchmarks: initdb into a temp dir, one loopback port.

Debian's ``postgresql`` package (scripts/test installs it) puts the server
binaries under /usr/lib/postgresql/<version>/bin. PostgreSQL refuses to run
as root, so as root (CI) the cluster belongs to the ``postgres`` user (or
``nobody``) and the binaries run through ``runuser``. Durability is off
(fsync, synchronous_commit): a test server, never a ledger anyone keeps.

``FTPBATCH_REQUIRE_PG=1`` (set by scripts/test) turns a missing PostgreSQL
into a failure instead of a skip, so CI cannot pass without running the
PostgreSQL tests.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

REQUIRE_ENV = "FTPBATCH_REQUIRE_PG"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user to run the server as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class PgServer:
    """One throw-away cluster; :meth:`new_database` gives each test its own database."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="ftpbatch-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._count = 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def start(self) -> PgServer:
        if self.user:
            shutil.chown(self.dir, self.user)
        subprocess.run(
            self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "ftpbatch", "--auth=trust",
                      "-E", "UTF8", "--no-locale", "--no-sync"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir,
        )
        log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - handed to the server process
        try:
            self.process = subprocess.Popen(
                self._cmd(str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                          "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                          "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.dir,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {(self.dir / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://ftpbatch@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        self._count += 1
        name = f"t{self._count}_{os.getpid()}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # smart shutdown... then fast
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
