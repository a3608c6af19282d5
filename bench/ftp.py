"""FTP and SFTP path benchmark: upload throughput and a login storm, ftpbatch vs bare pyftpdlib (vs vsftpd), and vs OpenSSH's sshd.

    python bench/ftp.py --mb 200 --logins 300 --sftp-logins 100 [--install-vsftpd] [--no-sftp]

In one run, against each server on this machine:
* upload throughput of one file (ftplib with 1 MiB blocks, and curl), MB/s;
* ``--logins`` clients connecting and logging in at once: seconds until all
  are logged in, and the speed of an upload running meanwhile relative to
  its speed alone.
ftpbatch hashes passwords with argon2id (checked off the loop); the bare
pyftpdlib baseline uses a plain-text DummyAuthorizer.

The SFTP column (bench/_sftp.py): one file's upload with OpenSSH's ``sftp``
and with asyncssh's client, and ``--sftp-logins`` key logins at once (each
opening an SFTP session), against ftpbatch's SFTP server and OpenSSH's sshd
with internal-sftp (a temporary config and host key on a loopback port;
openssh-server is installed when missing and this runs as root).
"""

from __future__ import annotations

import argparse
import asyncio
import ftplib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import PASSWORD, USER, BarePyftpdlib, FtpbatchServer, Vsftpd  # noqa: E402
import _sftp  # noqa: E402

BLOCK = 1 << 20
STORM_TIMEOUT = 60.0  # seconds for one storm login, and for the storm child to finish
# The upload that runs through the storm rewrites one file of this size over
# and over (see _keep_uploading), so what it writes stays bounded however long
# the storm takes.
STORM_FILE = 1 << 30


class _Repeat:
    """A file-like object yielding ``size`` bytes without holding them all."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.chunk = os.urandom(BLOCK)

    def read(self, n: int = BLOCK) -> bytes:
        if self.left <= 0:
            return b""
        n = min(n, self.left, BLOCK)
        self.left -= n
        return self.chunk[:n]


def ftplib_upload(port: int, size: int, name: str) -> float:
    client = ftplib.FTP()
    client.connect("127.0.0.1", port)
    client.login(USER, PASSWORD)
    started = time.perf_counter()
    # upload as .part: the benchmark measures the FTP path, not batch parsing
    client.storbinary(f"STOR /inbox/{name}.part", _Repeat(size), blocksize=BLOCK)
    seconds = time.perf_counter() - started
    client.delete(f"/inbox/{name}.part")
    client.quit()
    return size / seconds / 1e6


def curl_upload(port: int, path: Path, name: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "-T", str(path), f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port}/inbox/{name}.part"], check=True
    )
    seconds = time.perf_counter() - started
    client = ftplib.FTP()
    client.connect("127.0.0.1", port)
    client.login(USER, PASSWORD)
    client.delete(f"/inbox/{name}.part")
    client.quit()
    return path.stat().st_size / seconds / 1e6


class _Stream:
    """The storm upload's body: counts what it handed over, until told to stop."""

    def __init__(self) -> None:
        self.chunk = os.urandom(BLOCK)
        self.sent = 0
        self.stop = threading.Event()
        self.primed = threading.Event()  # the file exists at full size: laps only overwrite it

    def lap(self, size: int) -> "_Lap":
        return _Lap(self, size)


class _Lap:
    """``size`` bytes of a _Stream (fewer if it is stopped), as one STOR's file."""

    def __init__(self, stream: _Stream, size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, n: int = BLOCK) -> bytes:
        if self.stream.stop.is_set() or self.left <= 0:
            return b""
        self.left -= BLOCK
        self.stream.sent += BLOCK
        return self.stream.chunk


def _keep_uploading(client: ftplib.FTP, stream: _Stream, path: str) -> None:
    """Upload until ``stream`` is stopped, overwriting ``path`` (a .part name) from byte 1 on every lap.

    One endless STOR would grow the file by gigabytes a second; past a few
    gigabytes the machine's fresh memory (tmpfs) or its disk write-back slows
    every writer, and the benchmark would measure that instead of the server
    (a transfer fell from 1.7 to 0.3 GB/s a few seconds in, storm or not).
    Rewriting the same pages costs the server the same per byte and keeps
    the file at STORM_FILE. Each lap costs a PASV, REST and STOR, alone and
    during the storm alike. The first upload, which allocates the file, is
    not counted.
    """
    client.storbinary(f"STOR {path}", _Repeat(STORM_FILE + 1), blocksize=BLOCK)
    stream.primed.set()
    while not stream.stop.is_set():
        client.storbinary(f"STOR {path}", stream.lap(STORM_FILE), blocksize=BLOCK, rest=1)


def _rate(stream: _Stream, seconds: float) -> float:
    before, started = stream.sent, time.perf_counter()
    time.sleep(seconds)
    return (stream.sent - before) / (time.perf_counter() - started)


async def _reply(reader: asyncio.StreamReader) -> str:
    """One FTP reply, multi-line ones (``220-...`` up to ``220 ...``) included."""
    line = (await reader.readline()).decode("utf-8", "replace")
    if not line:
        raise ConnectionError("server closed the connection")
    code, reply = line[:3], line
    while line[3:4] == "-" or not line.startswith(code):
        line = (await reader.readline()).decode("utf-8", "replace")
        if not line:
            raise ConnectionError("server closed the connection mid-reply")
        reply += line
    return reply


async def _expect(reader: asyncio.StreamReader, code: str) -> None:
    reply = await _reply(reader)
    if not reply.startswith(code):
        raise RuntimeError(f"expected {code}, got {reply.strip()!r}")


async def _login(port: int) -> asyncio.StreamWriter:
    """The minimal login dialogue; the connection stays open for the caller."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _expect(reader, "220")
        writer.write(f"USER {USER}\r\n".encode())
        await _expect(reader, "331")
        writer.write(f"PASS {PASSWORD}\r\n".encode())
        await _expect(reader, "230")
    except BaseException:
        writer.close()
        raise
    return writer


async def _quit(writer: asyncio.StreamWriter) -> None:
    # a courtesy to the server: the measurement is over, so failures here do not matter
    try:
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except OSError:
        pass
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def _storm(port: int, clients: int) -> None:
    # Block on stdin before the first connect: the parent snapshots the upload's
    # byte count right before it writes this line, so its window starts with the storm.
    sys.stdin.readline()
    started = time.perf_counter()
    logins = await asyncio.gather(
        *(asyncio.wait_for(_login(port), STORM_TIMEOUT) for _ in range(clients)), return_exceptions=True
    )
    all_in = time.perf_counter() - started
    sessions = [s for s in logins if isinstance(s, asyncio.StreamWriter)]
    failures = [f for f in logins if not isinstance(f, asyncio.StreamWriter)]
    if not failures:
        # report before the QUITs so the parent's window ends when the last login is in
        print(f"done {all_in}", flush=True)
    await asyncio.gather(*(_quit(s) for s in sessions))
    if failures:
        raise SystemExit(f"storm: {len(failures)} of {clients} logins failed, e.g. {failures[0]!r}")


def storm_child(port: int, clients: int) -> None:
    """The login storm's clients, run in their own process (``--storm-child PORT``).

    In the parent's process they would take the GIL from the uploader whose
    speed is measured, and the benchmark would measure itself rather than the
    server. Prints ``ready`` once started up, waits for a line on stdin, logs
    ``clients`` in at once and prints ``done <seconds from first connect until
    all got 230>``; exits non-zero (without ``done``) if any login failed.
    """
    print("ready", flush=True)
    asyncio.run(_storm(port, clients))


def login_storm(port: int, clients: int) -> dict[str, float]:
    """``clients`` logins at once while one upload runs: time until all are in, and the upload's speed meanwhile.

    The upload streams from a thread of this process for as long as the
    measurement lasts, so its speed during the storm is compared with its
    speed just before, on the same connection. The storm runs in a child
    process (see ``storm_child``).
    """
    # started (interpreter up, imports done) before the upload, so its start-up does not weigh on the "alone" rate
    child = subprocess.Popen(
        [sys.executable, __file__, "--storm-child", str(port), "--logins", str(clients)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"storm child did not start (exit code {child.wait()})")
        stream = _Stream()
        uploader = ftplib.FTP()
        uploader.connect("127.0.0.1", port)
        uploader.login(USER, PASSWORD)
        transfer = threading.Thread(
            target=_keep_uploading, args=(uploader, stream, "/inbox/storm.part"), daemon=True
        )
        transfer.start()
        try:
            if not stream.primed.wait(STORM_TIMEOUT):
                raise RuntimeError("the storm upload's file was not written within the timeout")
            time.sleep(1.0)  # let it reach full speed (overwriting, it ramps up over ~0.6 s)
            alone = _rate(stream, 1.0)
            before, started = stream.sent, time.perf_counter()
            child.stdin.write("go\n")
            child.stdin.flush()
            # this thread now only waits on the pipe, leaving the GIL to the uploader
            done = child.stdout.readline()
            during = (stream.sent - before) / (time.perf_counter() - started)
        finally:
            stream.stop.set()
            transfer.join()
        if not done.startswith("done "):
            raise RuntimeError(f"login storm failed (storm child exit code {child.wait()}, its stderr above)")
        uploader.delete("/inbox/storm.part")
        uploader.quit()
        if child.wait(STORM_TIMEOUT) != 0:
            raise RuntimeError(f"storm child exited with {child.returncode}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return {"logins_s": float(done.split()[1]), "transfer_kept": during / alone}


def memory_backed_dir(needed: int) -> str | None:
    """/dev/shm when it is a tmpfs with ``needed`` bytes free, else None (the system's temporary folder).

    The servers' files go to memory so that the benchmark measures the
    servers: on disk, an upload at loopback speed fills the page cache within
    a second or two, and from then on the kernel throttles every writer to
    the disk's speed (an upload that measured 2 GB/s alone dropped to a
    quarter during the storm, with the server idle half the time).
    """
    shm = Path("/dev/shm")
    try:
        stats = os.statvfs(shm)
    except OSError:
        return None
    return str(shm) if stats.f_bavail * stats.f_frsize >= needed else None


def measure(name: str, port: int, size: int, curl_file: Path, logins: int) -> dict[str, float | str]:
    result: dict[str, float | str] = {"server": name}
    result["ftplib_mb_s"] = max(ftplib_upload(port, size, f"ftplib{n}") for n in range(2))
    result["curl_mb_s"] = max(curl_upload(port, curl_file, f"curl{n}") for n in range(2))
    try:
        result.update(login_storm(port, logins))
    except RuntimeError as exc:  # logins refused or timed out: say so, keep the throughput figures
        print(f"{name}: {exc}", file=sys.stderr)
        result.update(logins_s=float("nan"), transfer_kept=float("nan"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--work-dir", help="where the servers keep their files (default: /dev/shm when it has room)")
    parser.add_argument("--install-vsftpd", action="store_true", help="apt-get install vsftpd first (root)")
    parser.add_argument("--sftp-logins", type=int, default=100, help="SFTP logins at once (against each SFTP server)")
    parser.add_argument("--sftp-runs", type=int, default=3, help="SFTP rounds, alternating the servers (the best counts)")
    parser.add_argument("--no-sftp", action="store_true", help="FTP only")
    parser.add_argument("--only-sftp", action="store_true", help="SFTP only")
    parser.add_argument("--storm-child", type=int, metavar="PORT", help=argparse.SUPPRESS)  # see storm_child
    parser.add_argument("--sftp-storm-child", type=int, metavar="PORT", help=argparse.SUPPRESS)  # see _sftp.storm_child
    parser.add_argument("--sftp-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.storm_child is not None:
        storm_child(args.storm_child, args.logins)
        return
    if args.sftp_storm_child is not None:
        _sftp.storm_child(args.sftp_storm_child, args.logins, args.sftp_key)
        return
    if args.install_vsftpd and not Vsftpd.available():
        install = ["apt-get", "install", "-y", "-qq", "vsftpd"]
        if subprocess.run(install, check=False, capture_output=True).returncode != 0:  # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            subprocess.run(install, check=False, capture_output=True)
        if not Vsftpd.available():
            print("vsftpd could not be installed (needs root and apt); running without it", file=sys.stderr)
    size = args.mb * 1_000_000
    work_dir = args.work_dir or memory_backed_dir(STORM_FILE + 3 * size + (1 << 30))
    if work_dir is None:
        print("no tmpfs with room (/dev/shm): servers write to disk, whose write-back may set the speeds", file=sys.stderr)
    results: list[dict[str, float | str]] = []
    sftp: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory(prefix="ftpbatch-ftpbench-", dir=work_dir) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        curl_file = work / "upload.bin"
        with curl_file.open("wb") as fh:
            chunk = os.urandom(BLOCK)
            for _ in range(size // BLOCK):
                fh.write(chunk)
        if not args.only_sftp:
            bare = BarePyftpdlib(work / "bare")
            results.append(measure("bare pyftpdlib", bare.port, size, curl_file, args.logins))
            bare.stop()
            ours = FtpbatchServer(work / "ftpbatch")
            results.append(measure("ftpbatch", ours.port, size, curl_file, args.logins))
            ours.stop()
        if Vsftpd.available() and not args.only_sftp:
            vs: Vsftpd | None = None
            try:
                vs = Vsftpd(work / "vsftpd")
                results.append(measure("vsftpd", vs.port, size, curl_file, args.logins))
            except (ftplib.Error, OSError, RuntimeError, subprocess.SubprocessError) as exc:
                # a local vsftpd set-up we cannot drive: say why, keep the rest
                print(f"vsftpd skipped: {exc}", file=sys.stderr)
                if vs is not None:
                    print(f"vsftpd log, last lines:\n{vs.log_tail()}", file=sys.stderr)
            finally:
                if vs is not None:
                    vs.stop()
        if not args.no_sftp:
            sftp = _sftp.run(work, curl_file, args.sftp_logins, __file__, args.sftp_runs)
    summary: dict[str, object] = {"benchmark": "ftp", "mb": args.mb, "logins": args.logins}
    if results:
        base = results[0]
        ftpbatch = results[1]
        print(f"{'server':<16}{'ftplib MB/s':>12}{'curl MB/s':>11}{'logins s':>10}{'xfer kept':>10}")
        for r in results:
            print(f"{r['server']:<16}{r['ftplib_mb_s']:>12.1f}{r['curl_mb_s']:>11.1f}{r['logins_s']:>10.2f}{r['transfer_kept']:>10.2f}")
        summary.update({
            "ratio_ftplib_vs_bare": round(ftpbatch["ftplib_mb_s"] / base["ftplib_mb_s"], 2),  # type: ignore[operator]
            "ratio_curl_vs_bare": round(ftpbatch["curl_mb_s"] / base["curl_mb_s"], 2),  # type: ignore[operator]
            "ftpbatch_logins_s": round(ftpbatch["logins_s"], 2),  # type: ignore[arg-type]
            "ftpbatch_transfer_kept": round(ftpbatch["transfer_kept"], 2),  # type: ignore[arg-type]
        })
        if len(results) > 2:
            summary["ratio_ftplib_vs_vsftpd"] = round(ftpbatch["ftplib_mb_s"] / results[2]["ftplib_mb_s"], 2)  # type: ignore[operator]
            summary["ratio_curl_vs_vsftpd"] = round(ftpbatch["curl_mb_s"] / results[2]["curl_mb_s"], 2)  # type: ignore[operator]
    if sftp:
        print(f"{'SFTP server':<16}{'sftp MB/s':>12}{'asyncssh MB/s':>15}{'CPU s/MB':>10}{'logins s':>10}{'failed':>8}")
        for r in sftp:
            print(f"{r['server']:<16}{r['openssh_sftp_mb_s']:>12.1f}{r['asyncssh_mb_s']:>15.1f}{r['server_cpu_s_per_mb']:>10.4f}"
                  f"{r['logins_s']:>10.2f}{r['login_failures']:>8}")
        ours_sftp = sftp[-1]
        summary.update({
            "sftp_logins": args.sftp_logins,
            "ftpbatch_sftp_mb_s": round(ours_sftp["openssh_sftp_mb_s"], 1),  # type: ignore[arg-type]
            "ftpbatch_sftp_asyncssh_mb_s": round(ours_sftp["asyncssh_mb_s"], 1),  # type: ignore[arg-type]
            "ftpbatch_sftp_cpu_s_per_mb": round(ours_sftp["server_cpu_s_per_mb"], 4),  # type: ignore[arg-type]
            "ftpbatch_sftp_logins_s": round(ours_sftp["logins_s"], 2),  # type: ignore[arg-type]
            "ftpbatch_sftp_login_failures": ours_sftp["login_failures"],
        })
        if len(sftp) > 1:
            sshd = sftp[0]
            summary.update({
                "sshd_sftp_mb_s": round(sshd["openssh_sftp_mb_s"], 1),  # type: ignore[arg-type]
                "sshd_sftp_asyncssh_mb_s": round(sshd["asyncssh_mb_s"], 1),  # type: ignore[arg-type]
                "ratio_sftp_vs_sshd": round(ours_sftp["openssh_sftp_mb_s"] / sshd["openssh_sftp_mb_s"], 2),  # type: ignore[operator]
                "ratio_sftp_asyncssh_vs_sshd": round(ours_sftp["asyncssh_mb_s"] / sshd["asyncssh_mb_s"], 2),  # type: ignore[operator]
                "sshd_sftp_cpu_s_per_mb": round(sshd["server_cpu_s_per_mb"], 4),  # type: ignore[arg-type]
                "sshd_sftp_logins_s": round(sshd["logins_s"], 2),  # type: ignore[arg-type]
                "sshd_sftp_login_failures": sshd["login_failures"],
            })
    for r in results + sftp:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
