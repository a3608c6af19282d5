"""Hardening shared by the FTP server and the operator's commands.

* :mod:`.tls` — the server's TLS context (TLS 1.2+ only) and a self-signed
  certificate for trials (``ftpbatch init``);
* :mod:`.bans` — failed logins counted per address, bans persisted in the
  ledger so ``ftpbatch ban list|lift`` work against a running server;
* :mod:`.storage_guard` — free-disk floor, per-product storage quotas and
  upload budgets enforced while a transfer runs, retention of old files;
* :mod:`.guard` — the one background thread that keeps the loop-side
  snapshots (bans, disk, usage) fresh and runs retention.

Everything the FTP loop calls here is an in-memory lookup; SQL and disk walks
happen on the guard thread or on the login worker threads.
"""
