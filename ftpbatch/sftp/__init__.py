"""SFTP beside FTP/FTPS: the same products, homes, folders, limits and pipeline, over SSH (asyncssh).

* :mod:`.keys` — product keys (OpenSSH ``authorized_keys`` lines): checked, fingerprinted, matched;
* :mod:`.hostkey` — the server's ed25519 host key, made by ``ftpbatch init``;
* :mod:`.session` — the SFTP file operations of one logged-in product (chroot, permissions, atomic uploads);
* :mod:`.server` — the SSH server on its own thread and event loop, logins checked off that loop.
"""
