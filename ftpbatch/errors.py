"""One exception tree for ftpbatch; every error carries its contract code.

::

    FtpbatchError                 code, message (one sentence: what to fix)
     ├── UsageError               bad command-line use (exit code 2)
     ├── ConfigError              unreadable or invalid settings
     ├── ProductError             unknown product, duplicate name, bad option
     │    └── InvalidSetting      a product setting refused (101; 123 for a sender)
     ├── NotFound                 no product / batch / ban by that name or id (101)
     ├── LoginRefused             FTP login refused (001 credentials, 007 IP)
     ├── BatchRejected            a whole file refused (100, 101, 001, 130, 131)
     ├── EncodingError            a text that the chosen encoding cannot carry (116; also a ValueError)
     ├── PathError                a file the user named cannot be written (101)
 ├── MissingExtra             an optional extra a command needs is not installed (101)
     ├── NoPassivePort            every passive FTP port is busy (901: the server's capacity)
     ├── ConnectorError           upstream trouble, mapped at the connector edge
     └── LedgerError              the ledger could not do what was asked

Row-level problems (105, 107, 113, ...) are not exceptions: they are values in
the rules' output columns, because a million rows must not raise a million
times.
"""

from __future__ import annotations

from . import codes


class FtpbatchError(Exception):
    """Base of every error ftpbatch raises on purpose."""

    code: str = codes.E_INTERNAL
    exit_code: int = 1

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:  # "error 105: ..." is what users grep for
        return f"error {self.code}: {self.message}"


class UsageError(FtpbatchError):
    code = codes.E_PARAMETERS
    exit_code = 2


class ConfigError(FtpbatchError):
    code = codes.E_PARAMETERS


class ProductError(FtpbatchError):
    code = codes.E_PARAMETERS


class InvalidSetting(ProductError):
    """A product setting that is not allowed; nothing was changed."""


class NotFound(FtpbatchError):
    """The product, batch or address asked for does not exist (a missing parameter: 101)."""

    code = codes.E_PARAMETERS


class LoginRefused(FtpbatchError):
    code = codes.E_AUTH


class BatchRejected(FtpbatchError):
    """A file-level problem: the batch gets a ``rejected`` summary, no messages."""

    code = codes.E_MALFORMED

    def __init__(self, message: str, code: str | None = None, duplicate_of: str | None = None) -> None:
        super().__init__(message, code)
        #: For 130: the id of the earlier batch with the same bytes.
        self.duplicate_of = duplicate_of


class EncodingError(FtpbatchError, ValueError):
    """The text cannot be written in the encoding asked for (GSM 03.38 or UCS-2).

    Also a ValueError, so a caller asking "is this a valid value?" can catch
    either; an unknown encoding name is a parameter mistake (101).
    """

    code = codes.E_UNICODE


class PathError(FtpbatchError):
    """A file the user named (``--plot FILE``) cannot be written there."""

    code = codes.E_PARAMETERS


class MissingExtra(FtpbatchError):
    """An optional extra (``pip install 'ftpbatch[plot]'``) that a command needs is not installed; says how to install it."""

    code = codes.E_PARAMETERS


class NoPassivePort(FtpbatchError):
    """Every port of the configured passive range is in use (answered 425; not the client's mistake)."""


class ConnectorError(FtpbatchError):
    code = codes.E_INTERNAL


class LedgerError(FtpbatchError):
    code = codes.E_INTERNAL
