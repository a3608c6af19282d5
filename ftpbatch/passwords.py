"""Password hashing: argon2id only; plain passwords never stored or logged.

Hashing is deliberately slow (tens of milliseconds), so callers on the FTP
loop must not call :func:`verify_password` directly: the FTP handler runs it
in a thread pool.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id baseline (19 MiB, 2 passes): strong enough for FTP
# passwords and cheap enough that hundreds of logins at once stay in seconds.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the user name is unknown, so that an unknown user
# costs the same time as a wrong password and reveals nothing.
_DUMMY_HASH = _HASHER.hash("ftpbatch-no-such-user")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; constant work whether or not the user exists."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
