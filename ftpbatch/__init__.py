"""ftpbatch: an FTP batch gateway for bulk SMS."""

__version__ = "0.1.0"
