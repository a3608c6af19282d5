import threading
import time

from ftpbatch import passwords
from ftpbatch.passwords import VerifiedCache, hash_password, verify_password


def test_hash_round_trip_and_unknown_user():
    stored = hash_password("right-password")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "right-password")
    assert not verify_password(stored, "wrong-password")
    assert not verify_password(None, "right-password")


def test_cache_hashes_once_for_a_burst_of_identical_logins(monkeypatch):
    stored = hash_password("right-password")
    calls = []
    real = passwords.verify_password

    def counting(h, p):
        calls.append(p)
        return real(h, p)

    monkeypatch.setattr(passwords, "verify_password", counting)
    cache = VerifiedCache()
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.verify(stored, "right-password"))) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 20
    assert len(calls) == 1


def test_wrong_passwords_are_never_cached_and_always_pay_the_hash(monkeypatch):
    stored = hash_password("right-password")
    calls = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda h, p: calls.append(p) or real(h, p))
    cache = VerifiedCache()
    assert not cache.verify(stored, "wrong")
    assert not cache.verify(stored, "wrong")
    assert len(calls) == 2
    # a changed password (new stored hash) invalidates the cached success
    assert cache.verify(stored, "right-password")
    assert not cache.verify(hash_password("new-password"), "right-password")


def test_cached_success_expires():
    stored = hash_password("right-password")
    cache = VerifiedCache(ttl=0.05)
    assert cache.verify(stored, "right-password")
    time.sleep(0.1)
    started = time.perf_counter()
    assert cache.verify(stored, "right-password")
    assert time.perf_counter() - started > 0.002  # hashed again
