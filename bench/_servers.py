"""Servers for the benchmarks: ftpbatch itself, a bare pyftpdlib, vsftpd when installed."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ftpbatch.ledger import Ledger  # noqa: E402
from ftpbatch.models import Product  # noqa: E402
from ftpbatch.passwords import hash_password  # noqa: E402
from ftpbatch.storage import LocalStorage  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FtpbatchServer:
    def __init__(self, root: Path, connector: str = "sim://?receipt_delay=0", extra: tuple[str, ...] = (), **product: object) -> None:
        self.root = root
        ledger = Ledger(root / "ftpbatch.db")
        if ledger.get_product(USER) is None:
            ledger.add_product(Product(USER, hash_password(PASSWORD), dial_prefix="44", **product))  # type: ignore[arg-type]
        ledger.close()
        LocalStorage(root).ensure_home(USER)
        env = {
            **os.environ,
            "FTPBATCH_REPORT_INTERVAL": "0.02",
            "FTPBATCH_INTAKE_SETTLE_SECONDS": "0.1",
            # every benchmark client comes from 127.0.0.1
            "FTPBATCH_FTP_MAX_CONS_PER_IP": "1024",
            "FTPBATCH_FTP_MAX_CONS": "1024",
        }
        self.log = open(root / "server.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftpbatch", "--root", str(root), "serve", "--ftp-port", "0", "--connector", connector, *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.sftp_port = 0
        for line in self.proc.stdout:
            if "serving FTP on" in line:
                self.port = int(line.split("serving FTP on ")[1].split()[0].rsplit(":", 1)[1])
                if "--sftp-port" not in extra:
                    break
            elif "serving SFTP on" in line:  # printed after the FTP line
                self.sftp_port = int(line.split("serving SFTP on ")[1].split()[0].rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError((root / "server.log").read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


BARE_SERVER = textwrap.dedent(
    """
    import sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
    home, port = sys.argv[1], int(sys.argv[2])
    auth = DummyAuthorizer()
    auth.add_user("{user}", "{password}", home, perm="elradfmw")
    handler = type("H", (FTPHandler,), {{"authorizer": auth, "use_sendfile": False}})
    server = FTPServer(("127.0.0.1", port), handler)
    server.max_cons = 1024
    server.max_cons_per_ip = 1024
    print("ready", flush=True)
    server.serve_forever(handle_exit=True)
    """
).format(user=USER, password=PASSWORD)


class BarePyftpdlib:
    """pyftpdlib on its own with a plain DummyAuthorizer: the baseline."""

    def __init__(self, home: Path) -> None:
        (home / "inbox").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(home), str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # on a busy machine, after a storm of 300 sessions: the figures are taken
            self.proc.kill()
            self.proc.wait(10)


# The vsftpd user's passwd home: vsftpd changes into it at login (before local_root)
# and refuses the login with "500 OOPS: cannot change directory" if it is missing.
# A fixed directory rather than the run's temporary one: a home left pointing at
# an earlier run's deleted directory broke logins, and changing it takes usermod,
# which fails while a vsftpd session of that user is still alive.
VSFTPD_HOME = Path("/var/lib/ftpbatch-bench")
NOLOGIN = "/usr/sbin/nologin"  # the password is public: the account must not give a shell
# Debian's /etc/pam.d/vsftpd also requires a shell listed in /etc/shells
# (pam_shells), rejects users named in /etc/ftpusers, and runs the host's whole
# common-session stack. A service of our own checks the password and the account
# only, the same on any host.
PAM_SERVICE = "ftpbatch-bench"
PAM_CONFIG = textwrap.dedent(
    """\
    # written by ftpbatch bench/_servers.py for the vsftpd comparison
    auth     required pam_unix.so
    account  required pam_unix.so
    session  required pam_permit.so
    """
)


class Vsftpd:
    """vsftpd with a local user ``bench``, when the machine has it (root only).

    Sets up, idempotently: the PAM service ``/etc/pam.d/ftpbatch-bench``, the
    user (home ``VSFTPD_HOME``, no login shell) and its password. Each session
    is chrooted into ``root``, whose ``inbox/`` the user may write.
    """

    @staticmethod
    def available() -> bool:
        return shutil.which("vsftpd") is not None and os.geteuid() == 0

    def __init__(self, root: Path) -> None:
        uid = self._ensure_user()
        Path("/etc/pam.d", PAM_SERVICE).write_text(PAM_CONFIG)
        # the chroot stays root-owned and read-only to the user; only inbox/ takes uploads
        (root / "inbox").mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        os.chown(root / "inbox", uid, -1)
        secure_chroot_dir = Path("/var/run/vsftpd/empty")  # vsftpd's unprivileged helper chroots here
        secure_chroot_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.state = Path(tempfile.mkdtemp(prefix="ftpbatch-vsftpd-"))
        self.log = self.state / "vsftpd.log"
        conf = self.state / "vsftpd.conf"
        conf.write_text(
            textwrap.dedent(
                f"""\
                listen=YES
                listen_address=127.0.0.1
                listen_port={self.port}
                background=NO
                anonymous_enable=NO
                local_enable=YES
                write_enable=YES
                pam_service_name={PAM_SERVICE}
                local_root={root}
                chroot_local_user=YES
                secure_chroot_dir={secure_chroot_dir}
                # passive data connections answer on the control connection's address, 127.0.0.1
                pasv_enable=YES
                # every benchmark client comes from 127.0.0.1
                max_clients=1024
                max_per_ip=1024
                # only builds without PAM look at the shell themselves
                check_shell=NO
                seccomp_sandbox=NO
                use_localtime=NO
                # one line per connect, login (OK / FAIL) and upload: says why a login failed
                xferlog_enable=YES
                vsftpd_log_file={self.log}
                """
            )
        )
        # a file, not a pipe nobody reads while it runs; vsftpd reports start-up errors ("500 OOPS: ...") there
        self.stderr = self.state / "vsftpd.stderr"
        with self.stderr.open("w") as stderr:
            self.proc = subprocess.Popen(["vsftpd", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        error = self.stderr.read_text(errors="replace").strip()
        self.stop()
        raise RuntimeError(f"vsftpd did not start: {error}")

    @staticmethod
    def _ensure_user() -> int:
        VSFTPD_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            entry = pwd.getpwnam(USER)
        except KeyError:
            _run(["useradd", "--no-create-home", "--home-dir", str(VSFTPD_HOME), "--shell", NOLOGIN, USER])
        else:
            if entry.pw_dir != str(VSFTPD_HOME) or entry.pw_shell != NOLOGIN:  # left by an earlier version of this harness
                _run(["usermod", "--home", str(VSFTPD_HOME), "--shell", NOLOGIN, USER])
        # SHA-512 crypt (5,000 rounds, the long-time Linux default), not the system's
        # yescrypt: at ~50 ms of CPU per check, 300 PAM logins at once time out on
        # two cores and the login storm would measure hashing, not the server.
        _run(["chpasswd", "--crypt-method", "SHA512", "--sha-rounds", "5000"], input=f"{USER}:{PASSWORD}\n")
        return pwd.getpwnam(USER).pw_uid

    def log_tail(self, lines: int = 5) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        # sessions run in their own process sessions and end with their clients; this stops the listener
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.state, ignore_errors=True)


def _run(command: list[str], input: str | None = None) -> None:
    """Run a set-up command; fail with its own message rather than a bare exit code."""
    done = subprocess.run(command, input=input, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or f'exit code {done.returncode}'}")
