"""Servers for the benchmarks: ftpbatch itself, a bare pyftpdlib, vsftpd when installed."""

from __future__ import annotations

import os
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
    def __init__(self, root: Path, connector: str = "sim://?receipt_delay=0", **product: object) -> None:
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
            [sys.executable, "-m", "ftpbatch", "--root", str(root), "serve", "--ftp-port", "0", "--connector", connector],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=REPO,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "serving FTP on" in line:
                self.port = int(line.split("serving FTP on ")[1].split()[0].rsplit(":", 1)[1])
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
        self.proc.wait(10)


class Vsftpd:
    """vsftpd with a local user ``bench``, when the machine has it (root only)."""

    @staticmethod
    def available() -> bool:
        return shutil.which("vsftpd") is not None and os.geteuid() == 0

    def __init__(self, home: Path) -> None:
        (home / "inbox").mkdir(parents=True, exist_ok=True)
        subprocess.run(["useradd", "-M", "-d", str(home), USER], capture_output=True)
        subprocess.run(["usermod", "-d", str(home), USER], capture_output=True)  # left from an earlier run
        subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}", text=True, check=True)
        os.chown(home / "inbox", int(subprocess.check_output(["id", "-u", USER])), -1)
        os.chmod(home, 0o755)
        self.port = free_port()
        self.conf = Path(tempfile.mkstemp(suffix=".conf")[1])
        self.conf.write_text(
            f"listen=YES\nlisten_address=127.0.0.1\nlisten_port={self.port}\nlocal_enable=YES\nwrite_enable=YES\n"
            f"anonymous_enable=NO\nlocal_root={home}\nchroot_local_user=YES\nallow_writeable_chroot=YES\npasv_enable=YES\nseccomp_sandbox=NO\nuse_localtime=NO\n"
            "background=NO\ncheck_shell=NO\nmax_clients=1024\nmax_per_ip=1024\nsecure_chroot_dir=/var/run/vsftpd/empty\n"
            "pam_service_name=vsftpd\n"
        )
        Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["vsftpd", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("vsftpd did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.conf.unlink(missing_ok=True)
