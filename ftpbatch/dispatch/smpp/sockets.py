"""TCP_NODELAY on the sockets smpp34 opens.

smpp34's Rust core does not set TCP_NODELAY and its Python binding does not
expose the socket. With Nagle on, a submit_sm written while an earlier one is
still unacknowledged waits for the peer's (possibly delayed, 40 ms) ACK; with
a small window that stalls the pipe. The socket option lives in the kernel,
so we find our own process's TCP sockets connected to the SMSC through
``/proc`` and set it on a duplicate descriptor: the original socket gets it.
Linux only; elsewhere this does nothing and says so (returns 0).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from pathlib import Path


def _remote_endpoints(host: str, port: int) -> set[str]:
    """The ``/proc/net/tcp*`` spelling(s) of host:port ("0100007F:0ACF")."""
    spellings = set()
    for family, *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(sockaddr[0])
        packed = ip.packed
        if family == socket.AF_INET:
            hexip = packed[::-1].hex().upper()
        else:  # /proc/net/tcp6 prints four little-endian 32-bit words
            hexip = "".join(packed[i : i + 4][::-1].hex().upper() for i in range(0, 16, 4))
        spellings.add(f"{hexip}:{port:04X}")
        if family == socket.AF_INET:  # a v4 peer reached through a v6 socket
            mapped = ipaddress.IPv6Address(f"::ffff:{ip}").packed
            spellings.add("".join(mapped[i : i + 4][::-1].hex().upper() for i in range(0, 16, 4)) + f":{port:04X}")
    return spellings


def _inodes_connected_to(host: str, port: int) -> set[str]:
    wanted = _remote_endpoints(host, port)
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                # cols: sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                if len(cols) > 9 and cols[2] in wanted and cols[3] == "01":  # 01 = ESTABLISHED
                    inodes.add(cols[9])
    return inodes


def _own_sockets(inodes: set[str]) -> list[int]:
    fds = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{name}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    fds.append(int(name))
    return fds


def set_nodelay_to(host: str, port: int) -> int:
    """Set TCP_NODELAY on every socket of this process connected to host:port.

    Returns how many sockets were set (0 where /proc is not available).
    """
    done = 0
    for fd in _own_sockets(_inodes_connected_to(host, port)):
        with contextlib.suppress(OSError):
            dup = socket.socket(fileno=os.dup(fd))
            try:
                dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                done += 1
            finally:
                dup.close()
    return done


def nodelay_states(host: str, port: int) -> list[bool]:
    """TCP_NODELAY of each socket of this process connected to host:port (for tests)."""
    states = []
    for fd in _own_sockets(_inodes_connected_to(host, port)):
        with contextlib.suppress(OSError):
            dup = socket.socket(fileno=os.dup(fd))
            try:
                states.append(bool(dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            finally:
                dup.close()
    return states
