"""Settings: one frozen object, built once, passed down.

Sources, later ones winning: built-in defaults, ``<root>/ftpbatch.toml``,
environment variables ``FTPBATCH_<SECTION>_<KEY>`` (``FTPBATCH_FTP_PORT``),
command-line flags. ``FTPBATCH_ROOT`` (or ``--root``) picks the data root.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

DEFAULT_ROOT = "./ftpbatch-data"
SETTINGS_FILE = "ftpbatch.toml"


@dataclass(frozen=True)
class FtpSettings:
    #: Address to listen on; "0.0.0.0" accepts connections from other machines.
    host: str = "127.0.0.1"
    #: FTP control port.
    port: int = 2121
    #: "A-B" range for passive data connections; empty: any free port.
    passive_ports: str = ""
    #: Address announced in PASV replies when behind NAT.
    masquerade_address: str = ""
    #: PEM certificate and key for explicit FTPS (AUTH TLS); relative paths are
    #: under the data root. ``ftpbatch init`` writes a self-signed pair to tls/.
    tls_cert: str = ""
    tls_key: str = ""
    #: Refuse every login that did not AUTH TLS first (per product: ``require_tls``).
    tls_required: bool = False
    #: Longest file name accepted, in UTF-8 bytes (room left for the batch id
    #: and report suffixes within the file system's 255).
    max_name_bytes: int = 200
    #: Failed logins from one address within ``ban_window`` seconds that ban it
    #: for ``ban_seconds``; 0 failures: never ban.
    ban_failures: int = 10
    ban_window: float = 600.0
    ban_seconds: float = 900.0
    #: Uploads are refused (452) while the data root's disk has less free space.
    min_free_mb: float = 100.0
    #: Open control connections at most, in all and from one address.
    max_cons: int = 512
    max_cons_per_ip: int = 64
    #: New connections accepted per second, with up to ``accept_burst`` at
    #: once; the rest wait in the accept queue, so that a login storm cannot
    #: take the CPU from uploads in progress (see ftp/pacing.py). 0: no limit.
    accept_rate: float = 100.0
    accept_burst: int = 30
    #: Seconds a failed login waits before its reply (slows guessing).
    auth_failed_delay: float = 1.0
    #: Threads checking password hashes off the FTP loop.
    auth_threads: int = 4
    #: Seconds of silence after which a session is closed.
    idle_timeout: int = 300

    def passive_range(self) -> range | None:
        if not self.passive_ports:
            return None
        try:
            low, high = (int(p) for p in self.passive_ports.split("-", 1))
        except ValueError:
            raise ConfigError(f"passive ports must look like 60000-60099, not {self.passive_ports!r}") from None
        if not 1024 <= low <= high <= 65535:
            raise ConfigError(f"passive ports {self.passive_ports!r} must be a range within 1024-65535")
        return range(low, high + 1)


@dataclass(frozen=True)
class SftpSettings:
    """The SFTP server beside FTP (off unless a port is set: an upgrade never opens a new port by itself)."""

    #: TCP port (e.g. 2222); unset: no SFTP server. 0: any free port (tests).
    port: int | None = None
    #: Address to listen on; empty: the [ftp] host.
    host: str = ""
    #: The ed25519 host key ``ftpbatch init`` makes; relative paths are under the data root.
    host_key: str = "ssh/host_ed25519_key"
    #: Seconds a client may take to log in before it is disconnected.
    login_timeout: float = 30.0
    #: Threads checking password hashes and keys off the SFTP loop.
    auth_threads: int = 4
    #: Open SSH connections at most, in all and from one address (counted
    #: apart from FTP's); unset: the [ftp] ``max_cons`` and ``max_cons_per_ip``.
    #: A connection over either is told so (SSH disconnect "too many
    #: connections") before the key exchange.
    max_cons: int | None = None
    max_cons_per_ip: int | None = None


@dataclass(frozen=True)
class IntakeSettings:
    #: Seconds a locally dropped file's size and mtime must stay unchanged.
    settle_seconds: float = 0.3
    #: Seconds between full rescans of every inbox (catches lost events).
    rescan_seconds: float = 30.0
    #: Rows per parsed chunk: bounds memory whatever the file size.
    chunk_rows: int = 250_000


@dataclass(frozen=True)
class DispatchSettings:
    #: ``sim``, ``sim://?receipt_delay=0.2&failure_ratio=0``, or ``smpp://...``.
    connector: str = "sim"
    #: Messages per second over the whole connector; 0: unlimited.
    tps: float = 0.0
    #: Seconds a leased message may stay unanswered before it is re-queued.
    lease_seconds: float = 60.0
    #: Seconds after submit when a missing receipt stops holding the batch open.
    receipt_timeout: float = 48 * 3600.0
    #: Seconds a message may wait at 003 before its receipt is asked for with
    #: query_sm (SMPP connectors; again with backoff while unanswered); 0: never.
    #: Messages submitted before a restart are asked about right after it.
    receipt_query_after: float = 300.0
    #: Seconds a receipt that matches no message stays parked (re-tried) before
    #: it is counted as never matched.
    parked_receipt_expiry: float = 3600.0
    #: MO texts that opt their sender out of the product whose sender address
    #: they were sent to (comma-separated; case-insensitive, trimmed).
    optout_keywords: str = "STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT"

    def __post_init__(self) -> None:
        self.keywords()  # fail at start-up

    def keywords(self) -> frozenset[str]:
        """``optout_keywords`` as upper-case words; accepts "STOP, END" and a TOML list."""
        text = self.optout_keywords.strip().strip("[]")
        words = frozenset(w.strip().strip("'\"").strip().upper() for w in text.split(",") if w.strip())
        if any(not w or any(c.isspace() for c in w) for w in words):
            raise ConfigError(f"[dispatch] optout_keywords must be single words separated by commas, not {self.optout_keywords!r}")
        return words


@dataclass(frozen=True)
class ReportSettings:
    #: Minimum seconds between two rewrites of one batch's report files.
    interval: float = 0.25
    #: Days processed originals stay in ``archive/``.
    archive_days: int = 30
    #: Seconds between two refreshes of every product's ``reports/usage-YYYY-MM.csv``
    #: (also refreshed when the UTC day ends).
    usage_refresh: float = 3600.0
    #: After a batch completes its product's usage file is refreshed within
    #: this many seconds (at most once per this many).
    usage_min_interval: float = 2.0


@dataclass(frozen=True)
class CallbackSettings:
    """Delivery status callbacks (DESIGN.md §8), sent from the ledger's outbox."""

    #: Seconds to wait before each retry, comma-separated; after the last one
    #: a callback is given up (and counted). Fractions are allowed.
    retry_delays: str = "120, 240, 480, 960, 1500"
    #: Seconds one POST may take in all (connect, send, answer).
    timeout: float = 10.0
    #: POSTs in flight at once, over all products.
    concurrency: int = 8
    #: Days delivered and given-up callbacks stay in the ledger's outbox.
    keep_days: float = 7.0

    def __post_init__(self) -> None:
        self.delays()  # fail at start-up, not at the first retry
        if self.timeout <= 0 or self.concurrency < 1:
            raise ConfigError("[callbacks] timeout must be above 0 and concurrency at least 1")

    def delays(self) -> tuple[float, ...]:
        """``retry_delays`` as seconds; accepts "1, 2.5" and a TOML list."""
        text = self.retry_delays.strip().strip("[]()")
        try:
            delays = tuple(float(part) for part in text.replace(",", " ").split())
        except ValueError:
            raise ConfigError(
                f"[callbacks] retry_delays must be seconds separated by commas, e.g. \"120, 240, 480\", not {self.retry_delays!r}"
            ) from None
        if any(d < 0 for d in delays):
            raise ConfigError("[callbacks] retry_delays cannot be negative")
        return delays


@dataclass(frozen=True)
class MetricsSettings:
    """The operator's HTTP endpoint: /metrics (Prometheus), /healthz, /status."""

    #: TCP port; unset: no endpoint (``ftpbatch status`` still reads status.json).
    port: int | None = None
    #: Address of the endpoint (keep it on loopback unless a scraper elsewhere needs it).
    host: str = "127.0.0.1"
    #: Seconds between two writes of ``<root>/status.json``.
    status_interval: float = 2.0


@dataclass(frozen=True)
class LedgerSettings:
    """Where the ledger is (DESIGN.md §12): SQLite in the data root, or a shared PostgreSQL."""

    #: postgresql://user[:password]@host:port/database for a ledger several nodes
    #: share; empty: the SQLite file ftpbatch.db in the data root. Also
    #: ``FTPBATCH_LEDGER`` or ``ftpbatch --ledger URL``.
    url: str = ""

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"[ledger] url must be a postgresql://user:password@host:port/database URL, not {self.url!r}")


@dataclass(frozen=True)
class Settings:
    root: Path = Path(DEFAULT_ROOT)
    #: This node's name among the nodes sharing one ledger (leases, the nodes
    #: table, ``ftpbatch status``; DESIGN.md §12.6); default: the host name.
    #: Also ``FTPBATCH_NODE_ID`` or ``serve --node-id NAME``.
    node_id: str = field(default_factory=socket.gethostname)
    ftp: FtpSettings = field(default_factory=FtpSettings)
    sftp: SftpSettings = field(default_factory=SftpSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)

    @property
    def db_path(self) -> Path:
        return self.root / "ftpbatch.db"

    @property
    def ledger_location(self) -> Path | str:
        """What ``Ledger()`` opens: the PostgreSQL URL if one is set, else the SQLite file in the root."""
        return self.ledger.url or self.db_path

    @property
    def homes_dir(self) -> Path:
        return self.root / "homes"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def settings_file(self) -> Path:
        return self.root / SETTINGS_FILE


_SECTIONS = ("ftp", "sftp", "intake", "dispatch", "report", "callbacks", "metrics", "ledger")


def root_path(root: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The data root: ``root`` (``--root``), else ``$FTPBATCH_ROOT``, else ./ftpbatch-data; absolute."""
    env = os.environ if environ is None else environ
    return Path(root or env.get("FTPBATCH_ROOT") or DEFAULT_ROOT).expanduser().resolve()


def load_settings(
    root: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from defaults, the TOML file, environment and flags.

    ``overrides`` maps a section name to the values given on the command line
    (``{"ftp": {"port": 2121}}``, and ``node_id`` at the top); ``None`` values mean "not given".
    """
    env = os.environ if environ is None else environ
    root_dir = root_path(root, env)
    layers: list[Mapping[str, Any]] = [_read_toml(root_dir / SETTINGS_FILE), _from_environ(env)]
    if overrides:
        layers.append({s: {k: v for k, v in vals.items() if v is not None} if isinstance(vals, Mapping) else vals
                       for s, vals in overrides.items() if vals is not None})

    top: dict[str, Any] = {"root": root_dir}
    sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for layer in layers:
        for key, value in layer.items():
            if key in _SECTIONS and isinstance(value, Mapping):
                sections[key].update(value)
            elif key == "node_id":
                top[key] = str(value)
            elif key != "root":
                raise ConfigError(f"unknown setting {key!r}: expected one of {', '.join(_SECTIONS)} or node_id")

    for name in _SECTIONS:
        cls = typing.get_type_hints(Settings)[name]
        top[name] = _build_section(cls, name, sections[name])
    return Settings(**top)


def _build_section(cls: type, name: str, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"unknown setting [{name}] {key!r}; known: {known}")
        kwargs[key] = _coerce(hints[key], raw, f"[{name}] {key}")
    return cls(**kwargs)


def _coerce(kind: Any, raw: Any, label: str) -> Any:
    if isinstance(kind, types.UnionType):
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    try:
        if kind is bool:
            if isinstance(raw, str):
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(raw)
            return bool(raw)
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {label} must be a {kind.__name__}, not {raw!r}") from None


def _read_toml(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _from_environ(env: Mapping[str, str]) -> Mapping[str, Any]:
    found: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith("FTPBATCH_") or key == "FTPBATCH_ROOT":
            continue
        rest = key[len("FTPBATCH_"):].lower()
        if rest == "node_id":
            found["node_id"] = value
            continue
        if rest == "ledger":  # FTPBATCH_LEDGER: the ledger's URL ([ledger] url)
            found.setdefault("ledger", {})["url"] = value
            continue
        section, _, name = rest.partition("_")
        if section in _SECTIONS and name:
            found.setdefault(section, {})[name] = value
    return found


_TOML_HEADER = """\
# ftpbatch settings, written by `ftpbatch init` from the built-in defaults.
# Environment variables FTPBATCH_<SECTION>_<KEY> and command-line flags
# override these values; a line left commented out keeps the default.
"""


def default_toml(values: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The settings file ``init`` writes: every setting of every section with its default
    (or the value in ``values``), each under the ``#:`` comment it has in this module.

    Generated from the dataclasses, so a new setting appears here by itself and a
    changed default cannot disagree with the file.
    """
    chosen = values or {}
    hints = typing.get_type_hints(Settings)
    lines = [_TOML_HEADER.rstrip("\n"), ""]
    # top-level keys come before the first table; the node id stays commented out
    # (the file is shared by every node on one data root: each names itself)
    lines += [f"# {line}" if line else "#" for line in _field_docs(Settings).get("node_id", [])]
    lines.append("# node_id =")
    for section in _SECTIONS:
        cls = hints[section]
        docs = _field_docs(cls)
        lines += ["", f"[{section}]"]
        for item in dataclasses.fields(cls):
            value = chosen.get(section, {}).get(item.name, item.default)
            lines += [f"# {line}" if line else "#" for line in docs.get(item.name, [])]
            if value is None:  # no TOML null: an unset optional setting stays commented out
                lines.append(f"# {item.name} =")
            else:
                lines.append(f"{item.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _field_docs(cls: type) -> dict[str, list[str]]:
    """``#:`` comment lines right above each field of a settings class (Sphinx's convention)."""
    docs: dict[str, list[str]] = {}
    pending: list[str] = []
    for raw in inspect.getsource(cls).splitlines():
        line = raw.strip()
        if line.startswith("#:"):
            pending.append(line[2:].strip())
        elif ":" in line and not line.startswith(("#", "def ", "@", "class ", '"')):
            name = line.split(":", 1)[0].strip()
            if name.isidentifier():
                docs[name] = pending
            pending = []
        else:
            pending = []
    return docs


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
