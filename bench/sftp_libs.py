"""Why asyncssh: its bare SFTP server against paramiko's, with the same clients, in one run.

    pip install paramiko   # a benchmark-only package; ftpbatch does not depend on it
    python bench/sftp_libs.py --mb 200 --logins 100 [--rounds 3]

Each library serves a folder on a loopback port from a process of its own,
with an ed25519 host key and one authorized ed25519 client key:
* asyncssh: ``asyncssh.create_server`` with ``asyncssh.SFTPServer(chroot=...)``
  (what ftpbatch's server builds on, without its checks);
* paramiko: ``paramiko.Transport`` per connection (a thread each) with
  ``paramiko.SFTPServer`` and a minimal ``SFTPServerInterface`` on the folder.
Measured: one file's upload with OpenSSH's ``sftp`` (MB/s, best of
``--rounds``) and the server's CPU seconds per MB; ``--logins`` asyncssh
key logins at once, each opening an SFTP session (seconds until all are in,
failures) and the server's CPU milliseconds per login. CPU time is read from
/proc, so it holds up on a shared machine where wall-clock figures do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import posixpath
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _servers import USER, free_port  # noqa: E402
import _sftp  # noqa: E402

BLOCK = 1 << 20


# --- the servers (run with --serve) --------------------------------------------------
def serve_asyncssh(folder: str, port: int, host_key: str, authorized: str) -> None:
    import asyncssh

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

    async def main() -> None:
        await asyncssh.create_server(
            Server, "127.0.0.1", port, server_host_keys=[host_key], authorized_client_keys=authorized,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=folder.encode()), allow_scp=False, backlog=1024,
        )
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_paramiko(folder: str, port: int, host_key: str, authorized: str) -> None:
    import paramiko

    allowed = Path(authorized).read_text().split()[1]
    key = paramiko.Ed25519Key.from_private_key_file(host_key)

    class Interface(paramiko.ServerInterface):
        def get_allowed_auths(self, username: str) -> str:
            return "publickey"

        def check_auth_publickey(self, username: str, offered: paramiko.PKey) -> int:
            ok = username == USER and offered.get_base64() == allowed
            return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

        def check_channel_request(self, kind: str, chanid: int) -> int:
            return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    class Handle(paramiko.SFTPHandle):
        def stat(self) -> paramiko.SFTPAttributes:
            return paramiko.SFTPAttributes.from_stat(os.fstat((self.writefile or self.readfile).fileno()))

        def chattr(self, attr: paramiko.SFTPAttributes) -> int:
            return paramiko.SFTP_OK

    class Files(paramiko.SFTPServerInterface):
        """The folder as the root; paths normalised under it (no links, as ftpbatch has none)."""

        def canonicalize(self, path: str) -> str:
            return posixpath.normpath(posixpath.join("/", path))

        def _real(self, path: str) -> str:
            return os.path.join(folder, self.canonicalize(path).lstrip("/"))

        def _attrs(self, path: str) -> paramiko.SFTPAttributes | int:
            try:
                return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)

        def stat(self, path: str) -> paramiko.SFTPAttributes | int:
            return self._attrs(path)

        lstat = stat

        def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
            real = self._real(path)
            try:
                return [paramiko.SFTPAttributes.from_stat(os.stat(os.path.join(real, n)), n) for n in os.listdir(real)]
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)

        def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Handle | int:
            try:
                fd = os.open(self._real(path), flags | getattr(os, "O_BINARY", 0), 0o644)
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)
            mode = "r+b" if flags & os.O_RDWR else ("wb" if flags & os.O_WRONLY else "rb")
            handle = Handle(flags)
            handle.filename = self._real(path)
            f = os.fdopen(fd, mode)
            if "r" in mode:
                handle.readfile = f
            if "w" in mode or "+" in mode:
                handle.writefile = f
            return handle

        def remove(self, path: str) -> int:
            try:
                os.remove(self._real(path))
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)
            return paramiko.SFTP_OK

    def session(sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, Files)
        try:
            transport.start_server(server=Interface())
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    print("ready", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=session, args=(sock,), daemon=True).start()


# --- the measurement ---------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class LibServer:
    def __init__(self, lib: str, work: Path, client_key: Path) -> None:
        self.folder = work / f"{lib}-root"
        (self.folder / "inbox").mkdir(parents=True)
        state = work / f"{lib}-state"
        state.mkdir()
        host = _sftp.make_key(state, "host_ed25519_key")
        self.host_public = (state / "host_ed25519_key.pub").read_text().split()[:2]
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", lib, str(self.folder), str(self.port), str(host), f"{client_key}.pub"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def measure(lib: str, work: Path, key: Path, upload: Path, logins: int, rounds: int) -> dict[str, object]:
    server = LibServer(lib, work, key)
    try:
        known = _sftp._known_hosts(work, server.port, server.host_public)
        speeds, cpu_per_mb = [], []
        for _ in range(rounds):
            before = cpu_seconds(server.proc.pid)
            speeds.append(_sftp.openssh_upload(server.port, key, known, upload, "/inbox/up.bin.part"))
            cpu_per_mb.append((cpu_seconds(server.proc.pid) - before) / (upload.stat().st_size / 1e6))
        storms, cpu_per_login, failed = [], [], 0
        for _ in range(rounds):
            before = cpu_seconds(server.proc.pid)
            seconds, failures = _sftp.login_storm(str(BENCH / "ftp.py"), server.port, logins, key)
            time.sleep(0.5)  # the closes' cost lands in the same window
            cpu_per_login.append((cpu_seconds(server.proc.pid) - before) / logins * 1000)
            storms.append(seconds)
            failed += failures
        return {
            "server": lib,
            "openssh_sftp_mb_s": round(max(speeds), 1),
            "server_cpu_s_per_mb": round(min(cpu_per_mb), 4),  # includes the upload's login, spread over the MB
            "logins_s": round(min(storms), 2),
            "login_failures": failed,
            "server_cpu_ms_per_login": round(min(cpu_per_login), 2),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        lib, folder, port, host_key, authorized = args.serve
        (serve_asyncssh if lib == "asyncssh" else serve_paramiko)(folder, int(port), host_key, authorized)
        return
    work_dir = _sftp_work_dir(args.mb * 3_000_000)
    with tempfile.TemporaryDirectory(prefix="ftpbatch-sftplibs-", dir=work_dir) as tmp:
        work = Path(tmp)
        key = _sftp.make_key(work, "client_ed25519")
        upload = work / "upload.bin"
        with upload.open("wb") as fh:
            chunk = os.urandom(BLOCK)
            for _ in range(args.mb * 1_000_000 // BLOCK):
                fh.write(chunk)
        results = [measure(lib, work, key, upload, args.logins, args.rounds) for lib in ("asyncssh", "paramiko")]
    print(f"{'library':<10}{'sftp MB/s':>11}{'CPU s/MB':>10}{'logins s':>10}{'failed':>8}{'CPU ms/login':>14}")
    for r in results:
        print(f"{r['server']:<10}{r['openssh_sftp_mb_s']:>11}{r['server_cpu_s_per_mb']:>10}{r['logins_s']:>10}"
              f"{r['login_failures']:>8}{r['server_cpu_ms_per_login']:>14}")
    for r in results:
        print(json.dumps(r))
    a, p = results
    print(json.dumps({"benchmark": "sftp_libs", "mb": args.mb, "logins": args.logins,
                      "ratio_mb_s_asyncssh_vs_paramiko": round(a["openssh_sftp_mb_s"] / p["openssh_sftp_mb_s"], 2),  # type: ignore[operator]
                      "ratio_cpu_per_login_paramiko_vs_asyncssh": round(p["server_cpu_ms_per_login"] / a["server_cpu_ms_per_login"], 2)}))  # type: ignore[operator]


def _sftp_work_dir(needed: int) -> str | None:
    from ftp import memory_backed_dir

    return memory_backed_dir(needed)


if __name__ == "__main__":
    main()
