"""SFTP's connection limits, as FTP's: in all and from one address, refused with a reason before the key exchange."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import asyncssh
import pytest

from ftpbatch.cli import main

from .helpers import add_product
from .sftp_clients import OpenSsh, SftpServerProcess

PER_IP = 2  # [ftp] max_cons_per_ip: SFTP takes it, having none of its own
IN_ALL = 3  # [sftp] max_cons: its own, instead of [ftp]'s


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sftp-limits")
    work = tmp_path_factory.mktemp("sftp-limits-client")
    assert main(["--root", str(root), "init", "--no-tls"]) == 0
    add_product(root, "acme", "acme-password")
    env = {"FTPBATCH_FTP_MAX_CONS_PER_IP": str(PER_IP), "FTPBATCH_SFTP_MAX_CONS": str(IN_ALL)}
    server = SftpServerProcess(root, "--sftp-port", "0", env=env).start()
    yield server, OpenSsh(server, work)
    server.stop()
    assert "Traceback" not in server.log(), server.log()


@contextlib.asynccontextmanager
async def _logged_in(server: SftpServerProcess, source: str) -> AsyncIterator[asyncssh.SFTPClient]:
    async with asyncssh.connect(
        "127.0.0.1", server.sftp_port, username="acme", password="acme-password", client_keys=None,
        known_hosts=None, agent_path=None, local_addr=(source, 0),
    ) as conn:
        async with conn.start_sftp_client() as sftp:
            yield sftp


async def _refusal(server: SftpServerProcess, source: str) -> str:
    try:
        async with _logged_in(server, source) as sftp:
            await sftp.listdir("/")
    except asyncssh.DisconnectError as exc:
        return f"{exc.code}: {exc.reason}"
    return "logged in"


def test_connections_over_the_limits_are_told_why_and_room_comes_back(site):
    server, openssh = site

    async def held_open() -> tuple[str, str, str]:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(PER_IP):
                sftp = await stack.enter_async_context(_logged_in(server, "127.0.0.1"))
                assert "inbox" in await sftp.listdir("/")
            # one more from 127.0.0.1 is over its address's limit, with OpenSSH's client and asyncssh's
            same_address = await asyncio.to_thread(openssh.with_password, "acme", "acme-password", "ls /\n")
            assert same_address.returncode != 0
            python_client = await _refusal(server, "127.0.0.1")
            # another address still gets in, up to the limit in all
            await stack.enter_async_context(_logged_in(server, "127.0.0.2"))
            in_all = await _refusal(server, "127.0.0.3")
            return same_address.stderr, python_client, in_all

    same_address, python_client, in_all = asyncio.run(held_open())
    assert f"Too many connections from 127.0.0.1 ({PER_IP} at most)" in same_address, same_address
    assert python_client.startswith(f"{asyncssh.DISC_TOO_MANY_CONNECTIONS}: Too many connections from 127.0.0.1")
    assert in_all.startswith(f"{asyncssh.DISC_TOO_MANY_CONNECTIONS}: Too many connections ({IN_ALL} at most)"), in_all
    # the refused were never counted and the closed ones are counted out: all may log in again
    again = openssh.with_password("acme", "acme-password", "ls /\n")
    assert again.returncode == 0, again.stderr
    assert asyncio.run(_refusal(server, "127.0.0.3")) == "logged in"
