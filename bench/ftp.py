"""FTP path benchmark: upload throughput and a login storm, ftpbatch vs bare pyftpdlib (vs vsftpd).

    python bench/ftp.py --mb 200 --logins 300 [--install-vsftpd]

In one run, against each server on this machine:
* upload throughput of one file (ftplib with 1 MiB blocks, and curl), MB/s;
* ``--logins`` clients connecting and logging in at once: seconds until all
  are logged in, and the speed of an upload running meanwhile relative to
  its speed alone.
ftpbatch hashes passwords with argon2id (checked off the loop); the bare
pyftpdlib baseline uses a plain-text DummyAuthorizer.
"""

from __future__ import annotations

import argparse
import ftplib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import PASSWORD, USER, BarePyftpdlib, FtpbatchServer, Vsftpd  # noqa: E402

BLOCK = 1 << 20


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
    """An endless upload body that counts what it handed over, until told to stop."""

    def __init__(self) -> None:
        self.chunk = os.urandom(BLOCK)
        self.sent = 0
        self.stop = threading.Event()

    def read(self, n: int = BLOCK) -> bytes:
        if self.stop.is_set():
            return b""
        self.sent += BLOCK
        return self.chunk


def _rate(stream: _Stream, seconds: float) -> float:
    before, started = stream.sent, time.perf_counter()
    time.sleep(seconds)
    return (stream.sent - before) / (time.perf_counter() - started)


def login_storm(port: int, clients: int) -> dict[str, float]:
    """``clients`` logins at once while one upload runs: time until all are in, and the upload's speed meanwhile.

    The upload streams for as long as the measurement lasts, so its speed
    during the storm is compared with its speed just before, on the same
    connection.
    """
    stream = _Stream()
    uploader = ftplib.FTP()
    uploader.connect("127.0.0.1", port)
    uploader.login(USER, PASSWORD)
    transfer = threading.Thread(
        target=lambda: uploader.storbinary("STOR /inbox/storm.part", stream, blocksize=BLOCK), daemon=True
    )
    transfer.start()
    time.sleep(0.3)  # let it reach full speed
    alone = _rate(stream, 0.5)

    def login(_: int) -> ftplib.FTP:
        client = ftplib.FTP(timeout=60)
        client.connect("127.0.0.1", port)
        client.login(USER, PASSWORD)
        return client

    before, started = stream.sent, time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        sessions = list(pool.map(login, range(clients)))
    all_in = time.perf_counter() - started
    during = (stream.sent - before) / all_in
    stream.stop.set()
    transfer.join()
    uploader.delete("/inbox/storm.part")
    uploader.quit()
    for client in sessions:
        try:
            client.quit()
        except (OSError, EOFError, ftplib.Error):
            pass
    return {"logins_s": all_in, "transfer_kept": during / alone}


def measure(name: str, port: int, size: int, curl_file: Path, logins: int) -> dict[str, float | str]:
    result: dict[str, float | str] = {"server": name}
    result["ftplib_mb_s"] = max(ftplib_upload(port, size, f"ftplib{n}") for n in range(2))
    result["curl_mb_s"] = max(curl_upload(port, curl_file, f"curl{n}") for n in range(2))
    result.update(login_storm(port, logins))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--install-vsftpd", action="store_true", help="apt-get install vsftpd first (root)")
    args = parser.parse_args()
    if args.install_vsftpd and not Vsftpd.available():
        subprocess.run(["apt-get", "install", "-y", "-qq", "vsftpd"], check=False, capture_output=True)
    size = args.mb * 1_000_000
    results = []
    with tempfile.TemporaryDirectory(prefix="ftpbatch-ftpbench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        curl_file = work / "upload.bin"
        with curl_file.open("wb") as fh:
            chunk = os.urandom(BLOCK)
            for _ in range(size // BLOCK):
                fh.write(chunk)
        bare = BarePyftpdlib(work / "bare")
        results.append(measure("bare pyftpdlib", bare.port, size, curl_file, args.logins))
        bare.stop()
        ours = FtpbatchServer(work / "ftpbatch")
        results.append(measure("ftpbatch", ours.port, size, curl_file, args.logins))
        ours.stop()
        if Vsftpd.available():
            vs = Vsftpd(work / "vsftpd")
            try:
                results.append(measure("vsftpd", vs.port, size, curl_file, args.logins))
            except (ftplib.Error, OSError) as exc:  # a local vsftpd set-up we cannot drive: say so, keep the rest
                print(f"vsftpd skipped: {exc}", file=sys.stderr)
            finally:
                vs.stop()
    base = results[0]
    ftpbatch = results[1]
    print(f"{'server':<16}{'ftplib MB/s':>12}{'curl MB/s':>11}{'logins s':>10}{'xfer kept':>10}")
    for r in results:
        print(f"{r['server']:<16}{r['ftplib_mb_s']:>12.1f}{r['curl_mb_s']:>11.1f}{r['logins_s']:>10.2f}{r['transfer_kept']:>10.2f}")
    summary = {
        "benchmark": "ftp",
        "mb": args.mb,
        "logins": args.logins,
        "ratio_ftplib_vs_bare": round(ftpbatch["ftplib_mb_s"] / base["ftplib_mb_s"], 2),  # type: ignore[operator]
        "ratio_curl_vs_bare": round(ftpbatch["curl_mb_s"] / base["curl_mb_s"], 2),  # type: ignore[operator]
        "ftpbatch_logins_s": round(ftpbatch["logins_s"], 2),  # type: ignore[arg-type]
        "ftpbatch_transfer_kept": round(ftpbatch["transfer_kept"], 2),  # type: ignore[arg-type]
    }
    if len(results) > 2:
        summary["ratio_ftplib_vs_vsftpd"] = round(ftpbatch["ftplib_mb_s"] / results[2]["ftplib_mb_s"], 2)  # type: ignore[operator]
        summary["ratio_curl_vs_vsftpd"] = round(ftpbatch["curl_mb_s"] / results[2]["curl_mb_s"], 2)  # type: ignore[operator]
    for r in results:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
