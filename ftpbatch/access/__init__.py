"""What a logged-in product may do, whatever protocol it came in by (FTP, FTPS, SFTP).

* :mod:`.login` — the login decision: credentials (password or SSH key),
  IP lock-down, disabled products, the same refusal for unknown users and
  wrong credentials, and the failed-login count that leads to bans;
* :mod:`.folders` — the folders of a home and what may be done in each;
* :mod:`.names` — file names a session may create or use;
* :mod:`.files` — opening files without following links, and listings that
  hide links, hard links and uploads in progress.

The protocol rooms (``ftp/``, ``sftp/``) translate these decisions into
their own replies; nothing here knows about either protocol.
"""
