"""The SFTP column of bench/ftp.py: ftpbatch's SFTP server against OpenSSH's sshd (internal-sftp).

Both are driven by the same clients in the same run: OpenSSH's ``sftp``
and asyncssh's client for the upload (MB/s of one file, written as a
``.part`` so that no batch is parsed), and ``--logins`` asyncssh clients at
once (each with an SFTP session open) for the login storm. Logins are by
ed25519 key on both sides. sshd runs from a temporary config with a
temporary host key on a loopback port; openssh-server is installed first
when missing (root).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _servers import USER, FtpbatchServer, _run, free_port

SSHD = "/usr/sbin/sshd"
STORM_TIMEOUT = 60.0
# the same user vsftpd's comparison uses (bench/_servers.py), made the same way when missing
SSHD_HOME = Path("/var/lib/ftpbatch-bench")


def ensure_sshd() -> bool:
    """sshd is there (installed now if it was not and this is root, without starting the system's service)."""
    if Path(SSHD).exists():
        return True
    if os.geteuid() != 0:
        return False
    policy = Path("/usr/sbin/policy-rc.d")  # Debian's hook: exit 101 keeps the package from starting sshd on port 22
    wrote_policy = not policy.exists()
    if wrote_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "openssh-server"]
        if subprocess.run(install, check=False, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            subprocess.run(install, check=False, capture_output=True, env=env)
    finally:
        if wrote_policy:
            policy.unlink()
    return Path(SSHD).exists()


def make_key(folder: Path, name: str) -> Path:
    path = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Sshd:
    """OpenSSH's sshd on 127.0.0.1 with internal-sftp only, for user ``bench`` by key; uploads go to ``home/inbox``."""

    def __init__(self, state: Path, home: Path, client_key: Path, storm: int) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        uid = self._ensure_user()
        self.inbox = home / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        os.chown(self.inbox, uid, -1)
        host_key = make_key(state, "host_ed25519_key")
        self.host_public = (state / "host_ed25519_key.pub").read_text().split()[:2]
        authorized = state / "authorized_keys"
        authorized.write_text(Path(f"{client_key}.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
        self.port = free_port()
        conf = state / "sshd_config"
        # No ChrootDirectory: it needs every folder up to the root owned by root and not
        # world-writable, and the benchmark's files live under /dev/shm (mode 1777).
        conf.write_text(textwrap.dedent(f"""\
            Port {self.port}
            ListenAddress 127.0.0.1
            HostKey {host_key}
            PidFile {state / 'sshd.pid'}
            AuthorizedKeysFile {authorized}
            StrictModes no
            UsePAM no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PubkeyAuthentication yes
            AllowUsers {USER}
            Subsystem sftp internal-sftp
            ForceCommand internal-sftp
            AllowTcpForwarding no
            X11Forwarding no
            PrintMotd no
            # every benchmark client comes from 127.0.0.1 at once (the default 10:30:100 drops most of a storm)
            MaxStartups {max(storm, 10) + 24}
            LoginGraceTime 60
            LogLevel ERROR
            """))
        self.log = state / "sshd.log"
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("w"))
        _wait_listening(self.port, self.proc, self.log)

    @staticmethod
    def _ensure_user() -> int:
        SSHD_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            pwd.getpwnam(USER)
        except KeyError:
            _run(["useradd", "--no-create-home", "--home-dir", str(SSHD_HOME), "--shell", "/usr/sbin/nologin", USER])
        # sshd without PAM refuses even key logins to a locked account ("!" in /etc/shadow, which
        # useradd leaves): "*" is no password, not locked. vsftpd's comparison sets a password instead.
        for line in Path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == USER and rest.startswith("!"):
                _run(["usermod", "-p", "*", USER])
        return pwd.getpwnam(USER).pw_uid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start: {log.read_text(errors='replace')[-2000:]}")


class FtpbatchSftp:
    """bench/_servers.py's FtpbatchServer with ``--sftp-port 0``, its product ``bench`` holding the client's key."""

    def __init__(self, root: Path, client_key: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from ftpbatch.ledger import Ledger
        from ftpbatch.sftp.hostkey import ensure_host_key
        from ftpbatch.sftp.keys import read_key_file

        root.mkdir(parents=True, exist_ok=True)
        ensure_host_key(root / "ssh" / "host_ed25519_key")
        self.host_public = (root / "ssh" / "host_ed25519_key.pub").read_text().split()[:2]
        self.server = FtpbatchServer(root, extra=("--sftp-port", "0"))
        ledger = Ledger(root / "ftpbatch.db")
        try:
            ledger.ssh_keys.update(USER, keys=read_key_file(f"{client_key}.pub"))
        finally:
            ledger.close()
        self.port = self.server.sftp_port
        self.inbox = root / "homes" / USER / "inbox"

    def stop(self) -> None:
        self.server.stop()


# --- clients ---------------------------------------------------------------------
def _known_hosts(work: Path, port: int, host_public: list[str]) -> Path:
    path = work / f"known_hosts-{port}"
    path.write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
    return path


def openssh_upload(port: int, key: Path, known_hosts: Path, local: Path, remote: str) -> float:
    """OpenSSH ``sftp -b``: one ``put``; MB/s of the put alone (login and exit timed apart and subtracted)."""
    batch = local.with_name(f"batch-{port}.txt")
    base = ["sftp", "-q", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-P", str(port)]

    def session(commands: str) -> float:
        batch.write_text(commands)
        started = time.perf_counter()
        done = subprocess.run([*base, "-b", str(batch), f"{USER}@127.0.0.1"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"sftp to port {port} failed: {done.stderr.strip()[-1000:]}")
        return time.perf_counter() - started

    idle = min(session("pwd\n") for _ in range(2))  # connect, key exchange, login, exit
    took = session(f"put {local} {remote}\n") - idle
    session(f"rm {remote}\n")
    return local.stat().st_size / took / 1e6


def asyncssh_upload(port: int, key: Path, local: Path, remote: str) -> float:
    import asyncssh

    async def run() -> float:
        async with asyncssh.connect("127.0.0.1", port, username=USER, client_keys=[str(key)], known_hosts=None,
                                    agent_path=None) as conn:
            async with conn.start_sftp_client() as sftp:
                started = time.perf_counter()
                await sftp.put(str(local), remote)
                took = time.perf_counter() - started
                await sftp.remove(remote)
        return local.stat().st_size / took / 1e6

    return asyncio.run(run())


def storm_child(port: int, clients: int, key: str) -> None:
    """``--sftp-storm-child PORT``: ``clients`` asyncssh logins at once, each opening an SFTP session.

    Prints ``done <seconds until every one that could was in> <failures> <first failure>``.
    Run in a process of its own, so that the clients' CPU is not the parent's.
    """
    import asyncssh

    async def one() -> asyncssh.SSHClientConnection:
        conn = await asyncssh.connect("127.0.0.1", port, username=USER, client_keys=[key], known_hosts=None,
                                      agent_path=None, login_timeout=STORM_TIMEOUT)
        try:
            sftp = await conn.start_sftp_client()
            await sftp.realpath(".")
        except BaseException:
            conn.close()
            raise
        return conn

    async def storm() -> None:
        started = time.perf_counter()
        results = await asyncio.gather(*(asyncio.wait_for(one(), STORM_TIMEOUT) for _ in range(clients)),
                                       return_exceptions=True)
        took = time.perf_counter() - started
        failures = [r for r in results if not isinstance(r, asyncssh.SSHClientConnection)]
        first = repr(failures[0])[:200] if failures else ""
        print(f"done {took} {len(failures)} {first}", flush=True)
        for r in results:
            if isinstance(r, asyncssh.SSHClientConnection):
                r.close()
        await asyncio.gather(*(r.wait_closed() for r in results if isinstance(r, asyncssh.SSHClientConnection)))

    asyncio.run(storm())


def login_storm(bench_script: str, port: int, clients: int, key: Path) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, bench_script, "--sftp-storm-child", str(port), "--logins", str(clients), "--sftp-key", str(key)],
        capture_output=True, text=True, timeout=STORM_TIMEOUT * 3,
    )
    line = next((l for l in out.stdout.splitlines() if l.startswith("done ")), None)
    if line is None:
        raise RuntimeError(f"SFTP storm child failed: {out.stderr[-1500:]}")
    _, seconds, failures, *first = line.split(" ", 3)
    if int(failures):
        print(f"sftp storm on port {port}: {failures} of {clients} failed, e.g. {' '.join(first)}", file=sys.stderr)
    return float(seconds), int(failures)


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of its reaped descendants (sshd's per-connection processes), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


class _Side:
    """One SFTP server under measurement: its best figures over the rounds."""

    def __init__(self, name: str, server: "Sshd | FtpbatchSftp", work: Path) -> None:
        self.name = name
        self.server = server
        self.known = _known_hosts(work, server.port, server.host_public)
        self.remote = f"{server.inbox}/sftp.bin.part" if isinstance(server, Sshd) else "/inbox/sftp.bin.part"
        self.pid = server.proc.pid if isinstance(server, Sshd) else server.server.proc.pid
        self.figures: dict[str, list[float]] = {"openssh_sftp_mb_s": [], "asyncssh_mb_s": [], "cpu_s_per_mb": [], "logins_s": []}
        self.failures = 0

    def upload_round(self, key: Path, upload: Path) -> None:
        before = cpu_seconds(self.pid)
        self.figures["openssh_sftp_mb_s"].append(openssh_upload(self.server.port, key, self.known, upload, self.remote))
        time.sleep(0.2)  # sshd's session processes reaped, so that their CPU is counted
        # the upload's session with its login and the idle-session calibration: the same two sessions on either side
        self.figures["cpu_s_per_mb"].append((cpu_seconds(self.pid) - before) / (upload.stat().st_size / 1e6))
        self.figures["asyncssh_mb_s"].append(asyncssh_upload(self.server.port, key, upload, self.remote))

    def storm_round(self, bench_script: str, logins: int, key: Path) -> None:
        try:
            seconds, failures = login_storm(bench_script, self.server.port, logins, key)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
            seconds, failures = float("nan"), logins
        self.figures["logins_s"].append(seconds)
        self.failures += failures

    def result(self) -> dict[str, float | str]:
        f = self.figures
        return {
            "server": self.name,
            "openssh_sftp_mb_s": max(f["openssh_sftp_mb_s"]),
            "asyncssh_mb_s": max(f["asyncssh_mb_s"]),
            "server_cpu_s_per_mb": min(f["cpu_s_per_mb"]),
            "logins_s": min(f["logins_s"]),
            "login_failures": self.failures,
        }


def run(work: Path, upload: Path, logins: int, bench_script: str, runs: int = 2) -> list[dict[str, float | str]]:
    """[sshd, ftpbatch] results (only ftpbatch's when sshd cannot be had).

    Both servers run at once and each round measures one, then the other, so
    that a busy spell of the shared machine falls on both alike; the best
    round of each counts (the storm's failures are added up).
    """
    keys = Path(tempfile.mkdtemp(prefix="ftpbatch-sftpbench-keys-"))
    servers: list[Sshd | FtpbatchSftp] = []
    try:
        key = make_key(keys, "client_ed25519")
        sides = []
        if ensure_sshd():
            servers.append(Sshd(work / "sshd-state", work / "sshd-home", key, logins))
            sides.append(_Side("OpenSSH sshd", servers[-1], work))
        else:
            print("sshd missing and not installable (needs root and apt): SFTP without its baseline", file=sys.stderr)
        servers.append(FtpbatchSftp(work / "ftpbatch-sftp", key))
        sides.append(_Side("ftpbatch SFTP", servers[-1], work))
        for n in range(runs):
            for side in sides if n % 2 == 0 else sides[::-1]:
                side.upload_round(key, upload)
        for n in range(runs):
            for side in sides if n % 2 == 0 else sides[::-1]:
                side.storm_round(bench_script, logins, key)
        return [side.result() for side in sides]
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(keys, ignore_errors=True)
