"""SFTP test clients: OpenSSH's own ``sftp`` (batch mode with a key, or a password through SSH_ASKPASS) and asyncssh's."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .helpers import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SftpServerProcess(ServerProcess):
    """``ftpbatch serve --sftp-port 0``; ``sftp_port`` is read from the start-up line."""

    sftp_port = 0

    def start(self, timeout: float = 20.0) -> "SftpServerProcess":
        super().start(timeout)
        assert self.proc is not None and self.proc.stdout is not None
        for _ in range(10):
            line = self.proc.stdout.readline()
            if "serving SFTP on" in line:
                self.sftp_port = int(line.split("serving SFTP on ")[1].split()[0].rsplit(":", 1)[1])
                return self
        raise RuntimeError(f"no SFTP listener announced:\n{self.log()}")


@dataclass
class OpenSsh:
    """Runs OpenSSH's ``sftp`` against the server, checking the host key ``init`` made."""

    server: SftpServerProcess
    workdir: Path

    def known_hosts(self) -> Path:
        public = (self.server.root / "ssh" / "host_ed25519_key.pub").read_text().split()
        path = self.workdir / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.server.sftp_port} {public[0]} {public[1]}\n")
        return path

    def _options(self, source: str) -> list[str]:
        return [
            "-o", f"UserKnownHostsFile={self.known_hosts()}", "-o", "StrictHostKeyChecking=yes",
            "-o", f"BindAddress={source}", "-o", "ConnectTimeout=10", "-o", "NumberOfPasswordPrompts=1",
            "-F", "/dev/null", "-P", str(self.server.sftp_port),
        ]

    def _key_command(self, user: str, key: Path, commands: str, source: str, *extra: str) -> list[str]:
        batch = self.workdir / "batch.txt"
        batch.write_text(commands)
        return ["sftp", "-b", str(batch), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no", *extra, *self._options(source), f"{user}@127.0.0.1"]

    def with_key(self, user: str, key: Path, commands: str, source: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._key_command(user, key, commands, source),
            capture_output=True, text=True, timeout=60, cwd=self.workdir, stdin=subprocess.DEVNULL,
        )

    def start_with_key(self, user: str, key: Path, commands: str, *extra: str) -> subprocess.Popen[bytes]:
        """``sftp`` running in the background, in a process group of its own (kill the group to kill its ssh too)."""
        return subprocess.Popen(
            self._key_command(user, key, commands, "127.0.0.1", *extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=self.workdir,
            start_new_session=True,
        )

    def with_password(self, user: str, password: str, commands: str, source: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
        # sftp -b forces BatchMode (no password); commands on stdin with the password from SSH_ASKPASS instead
        askpass = self.workdir / "askpass.sh"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
        return subprocess.run(
            ["sftp", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password", *self._options(source),
             f"{user}@127.0.0.1"],
            input=commands, capture_output=True, text=True, timeout=60, cwd=self.workdir, env=env, start_new_session=True,
        )


def make_key(folder: Path, name: str) -> Path:
    """An ed25519 key pair made by OpenSSH's ssh-keygen; returns the private key's path (``.pub`` beside it)."""
    path = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(path)], check=True)
    return path
