"""Password hashing: argon2id only; plain passwords never stored or logged.

Hashing is deliberately slow (tens of milliseconds), so callers on the FTP
loop must not call :func:`verify_password` directly: the FTP handler runs it
in a thread pool.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id baseline (19 MiB, 2 passes): strong enough for FTP
# passwords and cheap enough that hundreds of logins at once stay in seconds.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so that an unknown user
    costs the same time as a wrong password and reveals nothing. Made on first
    use, not at import: one hash is 40 ms of CPU that every command paid."""
    return _HASHER.hash("ftpbatch-no-such-user")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; constant work whether or not the user exists."""
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class VerifiedCache:
    """Remembers recent successful checks so a burst of logins hashes once.

    A sender's scripts often open many sessions of one product at once; each
    argon2id check costs ~15 ms of CPU that the FTP loop shares. Entries are
    keyed by an HMAC (with a per-process random key) of the stored hash and
    the password, so memory never holds a password, an entry dies when the
    product's password changes, and only *successful* checks are cached:
    a wrong password always pays the full hash. Concurrent checks of the same
    credentials wait for one computation instead of repeating it.
    """

    def __init__(self, ttl: float = 300.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}
        self._pending: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()

    def verify(self, stored_hash: str | None, password: str) -> bool:
        if stored_hash is None:
            return verify_password(None, password)
        key = hmac.new(self._key, f"{stored_hash}\0{password}".encode(), hashlib.sha256).digest()
        while True:
            with self._lock:
                expires = self._verified.get(key)
                if expires is not None and expires > time.monotonic():
                    return True
                waiting = self._pending.get(key)
                if waiting is None:
                    mine = self._pending[key] = threading.Event()
                    break
            waiting.wait()  # someone is checking the same credentials right now
            with self._lock:
                if key in self._verified:
                    continue
            return verify_password(stored_hash, password)  # theirs failed: pay the full cost too
        try:
            ok = verify_password(stored_hash, password)
            if ok:
                with self._lock:
                    if len(self._verified) >= self.max_entries:
                        self._verified.clear()
                    self._verified[key] = time.monotonic() + self.ttl
            return ok
        finally:
            with self._lock:
                del self._pending[key]
            mine.set()
