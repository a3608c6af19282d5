"""The SMPP connector's settings, parsed from its URL.

::

    smpp://system_id:password@host:port?bind=trx&window=10&tps=100&...

Every option has a default; an unknown option or a bad value is a
:class:`~ftpbatch.errors.ConfigError` naming the option, so a typo in
``--connector`` fails at start-up instead of being ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigError

DEFAULT_PORT = 2775


@dataclass(frozen=True, slots=True)
class SmppSettings:
    host: str
    port: int = DEFAULT_PORT
    system_id: str = ""
    password: str = ""
    #: "trx" (one transceiver) or "tx+rx" (a transmitter plus a receiver)
    bind: str = "trx"
    system_type: str = ""
    service_type: str = ""
    #: outstanding submit_sm PDUs (sent, not yet answered)
    window: int = 10
    #: submit_sm PDUs per second for this connector; None: unlimited
    tps: float | None = None
    #: None: automatic (alphanumeric sender 5/0, numeric 1/1, none 0/0)
    source_ton: int | None = None
    source_npi: int | None = None
    dest_ton: int = 1
    dest_npi: int = 1
    #: GSM 03.38 packed 7-bit (some SMSCs) instead of one septet per octet
    gsm_packed: bool = False
    #: concatenation by SAR TLVs instead of a UDH
    sar: bool = False
    #: how receipt ids relate to submit_sm_resp ids: "as-is", "dec" or "hex" (see receipts.py)
    receipt_id: str = "as-is"
    #: seconds after a submit when the ledger stops waiting for its receipt; unset:
    #: ``[dispatch] receipt_timeout`` (this route's value wins when the URL names one)
    receipt_timeout: float | None = None
    #: seconds between liveness checks of the bind (smpp34 sends enquire_link itself)
    enquire_link: float = 30.0
    #: seconds to wait for a submit_sm_resp before handing the message back for retry
    response_timeout: float = 10.0
    connect_timeout: float = 10.0
    #: re-bind backoff: first delay and cap, seconds
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    #: throttling (ESME_RTHROTTLED / ESME_RMSGQFUL / generic_nack): first pause and cap, seconds
    throttle_min: float = 0.2
    throttle_max: float = 10.0
    #: TLS on the connection (SMPP over TLS, often port 3550); ``tls_verify=0`` accepts any certificate
    tls: bool = False
    tls_verify: bool = True
    #: internal re-sends of one part after throttling before the message goes back to the ledger
    retry_max: int = 5
    #: binds (sessions) this system_id may hold in total across every node on the ledger; unset: no limit
    max_binds: int | None = None

    @property
    def account(self) -> str:
        return f"smpp:{self.system_id}@{self.host}:{self.port}"


_INT = {"window", "source_ton", "source_npi", "dest_ton", "dest_npi", "retry_max", "max_binds"}
_FLOAT = {"tps", "receipt_timeout", "enquire_link", "response_timeout", "connect_timeout",
          "reconnect_min", "reconnect_max", "throttle_min", "throttle_max"}
_BOOL = {"gsm_packed", "sar", "tls", "tls_verify"}
_STR = {"system_type", "service_type"}
_CHOICE = {"bind": ("trx", "tx+rx"), "receipt_id": ("as-is", "dec", "hex")}
OPTIONS = frozenset(_INT | _FLOAT | _BOOL | _STR | set(_CHOICE))


def parse_url(url: str) -> SmppSettings:
    """Parse ``smpp://system_id:password@host:port?option=value&...``."""
    parts = urlsplit(url)
    if parts.scheme != "smpp":
        raise ConfigError(f"connector URL {url!r} must start with smpp://")
    if not parts.hostname:
        raise ConfigError(f"connector URL {url!r} names no host: use smpp://system_id:password@host:port")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigError(f"connector URL has a bad port: {exc}") from exc
    values: dict[str, object] = {
        "host": parts.hostname,
        "port": port,
        "system_id": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    # "tx+rx" arrives as "tx rx" after query decoding; keep the plus.
    for key, raw in parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True):
        if key not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise ConfigError(f"unknown SMPP connector option {key!r}; known options: {known}")
        values[key] = _convert(key, raw)
    settings = SmppSettings(**values)  # type: ignore[arg-type]  # each value was converted to its field's type by _convert
    _check(settings)
    return settings


def _convert(key: str, raw: str) -> object:
    try:
        if key in _INT:
            return int(raw)
        if key in _FLOAT:
            if key == "tps" and raw in ("", "0", "none", "unlimited"):
                return None
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise ConfigError(f"SMPP connector option {key}={raw!r} is not a number") from None
    if key in _BOOL:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"SMPP connector option {key}={raw!r} must be 0 or 1")
    if key in _CHOICE and raw not in _CHOICE[key]:
        raise ConfigError(f"SMPP connector option {key}={raw!r} must be one of {', '.join(_CHOICE[key])}")
    return raw


def _check(s: SmppSettings) -> None:
    if not 1 <= s.window <= 1000:
        raise ConfigError(f"SMPP connector option window={s.window} must be between 1 and 1000")
    if s.tps is not None and s.tps <= 0:
        raise ConfigError(f"SMPP connector option tps={s.tps} must be positive (omit it for no limit)")
    for f in fields(s):
        value = getattr(s, f.name)
        if f.name in _FLOAT and value is not None and value <= 0:
            raise ConfigError(f"SMPP connector option {f.name}={value} must be positive")
        if f.name in ("source_ton", "source_npi", "dest_ton", "dest_npi") and value is not None and not 0 <= value <= 255:
            raise ConfigError(f"SMPP connector option {f.name}={value} must be between 0 and 255")
    if s.max_binds is not None and s.max_binds < (1 if s.bind == "trx" else 2):
        raise ConfigError(f"SMPP connector option max_binds={s.max_binds} must allow at least one bind "
                          f"({'1' if s.bind == 'trx' else '2: tx+rx binds twice'})")
    if s.retry_max < 0:
        raise ConfigError(f"SMPP connector option retry_max={s.retry_max} must not be negative")
    if len(s.system_id) > 15 or len(s.password) > 8:
        raise ConfigError("SMPP system_id is at most 15 characters and password at most 8 (SMPP 3.4 §4.1)")
