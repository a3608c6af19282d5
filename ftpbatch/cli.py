"""The operator's command line (DESIGN.md §10). Thin: parse flags, call the stages, map errors.

Exit codes: 0 ok, 1 operational error, 2 usage error; an error is one line on stderr.

Start-up time matters here (an operator's shell loop runs ``product list`` or
``status`` many times): pandas, pyarrow, prometheus_client and argon2 are
imported only by the commands that use them, inside the command functions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from . import __version__, cli_process, cli_senders, cli_ssh, cli_status
from .config import SETTINGS_FILE, Settings, default_toml, load_settings, root_path
from .errors import FtpbatchError, NotFound, PathError, ProductError, UsageError
from .heap import collect_less_often
from .logs import configure as configure_logs
from .logs import redact_url
from .models import Product, check_product_name, parse_allow_ip
from .storage import LocalStorage

if TYPE_CHECKING:
    from .ledger import Ledger

log = logging.getLogger("ftpbatch")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _product_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true", help="read the FTP password from standard input")
    parser.add_argument("--allow-ip", help="addresses and CIDR blocks allowed to log in, comma-separated ('' = any)")
    parser.add_argument("--dial-prefix", help="country code that replaces a leading 0, e.g. 44")
    parser.add_argument("--callback-url", help="URL receiving delivery status POSTs")
    parser.add_argument("--callback-auth", metavar="USER:PASS", help="basic-auth credentials for the callback URL")
    parser.add_argument("--callback-level", type=int, choices=range(4), help="0 none, 1 intermediate, 2 final, 3 all")
    parser.add_argument("--sender", help="default sender ID")
    parser.add_argument("--tps", type=float, help="maximum messages per second for this product")
    parser.add_argument("--require-tls", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--max-file-mb", type=float, help="largest accepted file, in MB")
    parser.add_argument("--max-parts", type=int, help="most parts one message may have (default 6)")
    parser.add_argument("--allow-duplicates", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--duplicate-window", type=float, metavar="HOURS", help="refuse identical files within this many hours (0 = never)")
    parser.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--quota-mb", type=float, help="storage quota for inbox/, reports/ and archive/, in MB (0 = none)")
    parser.add_argument("--retention-days", type=int, help="days archived files and reports are kept (0 = forever; default: the server's)")
    cli_ssh.add_key_options(parser)


def invoked_as(argv0: str | None = None) -> str:
    """How the user ran this command, for the hints it prints (``.venv/bin/ftpbatch``, ``python -m ftpbatch``).

    ``scripts/start`` installs into .venv without putting it on PATH, so a
    hint saying plain ``ftpbatch`` would name a command the shell cannot find.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(argv0)
    if name in ("__main__.py", "-m", "-c", "") or not argv0:
        python = sys.executable
        if shutil.which(os.path.basename(python)) == python:
            python = os.path.basename(python)
        else:
            python = _relative(python)
        return f"{python} -m ftpbatch"
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return name  # on PATH: the bare name works
    return _relative(argv0)


def _relative(path: str) -> str:
    """``path`` as typed if relative, else relative to here when it is below here."""
    if not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def build_parser(prog: str = "ftpbatch") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="FTP batch gateway for bulk SMS.")
    parser.add_argument("--root", help="data root (default: $FTPBATCH_ROOT or ./ftpbatch-data)")
    parser.add_argument("--ledger", metavar="URL", help="postgresql://user:pw@host:port/db: a ledger several nodes share "
                        "(default: $FTPBATCH_LEDGER, [ledger] url, else SQLite in the root)")
    parser.add_argument("--version", action="version", version=f"ftpbatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    init = commands.add_parser("init", help="create the data root, settings file and ledger")
    init.add_argument("--demo", action="store_true", help="also create a product 'demo' with a generated password")
    init.add_argument("--no-tls", action="store_true", help="do not create a self-signed TLS certificate")

    serve = commands.add_parser("serve", help="run the FTP server and the pipeline")
    serve.add_argument("--node-id", help="this node's name among the nodes of one ledger (default: [node_id], else the host name)")
    serve.add_argument("--ftp-host")
    serve.add_argument("--ftp-port", type=int)
    serve.add_argument("--passive-ports", metavar="A-B")
    serve.add_argument("--masquerade-address")
    serve.add_argument("--connector", help="sim (default), sim://?receipt_delay=0.2&failure_ratio=0, or smpp://...")
    serve.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz and /status over HTTP on this port (0: any free port)")
    serve.add_argument("--log-json", action="store_true", help="log one JSON object per line instead of text")
    serve.add_argument("--tls-cert")
    serve.add_argument("--tls-key")
    serve.add_argument("--sftp-port", type=int, help="also serve SFTP on this port (0: any free port)")
    serve.add_argument("--sftp-host", help="address for SFTP (default: the FTP host)")
    serve.add_argument("--sftp-host-key", metavar="FILE", help="SSH host key (default: the one init made under the root)")

    product = commands.add_parser("product", help="manage products (FTP users)").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    add = product.add_parser("add", help="create a product")
    add.add_argument("name")
    _product_options(add)
    change = product.add_parser("set", help="change a product")
    change.add_argument("name")
    _product_options(change)
    listing = product.add_parser("list", help="list products")
    listing.add_argument("--json", action="store_true")
    show = product.add_parser("show", help="show one product")
    show.add_argument("name")

    process = commands.add_parser("process", help="process one file now and wait for its final report")
    process.add_argument("file", type=Path)
    process.add_argument("--product", required=True)
    process.add_argument("--connector")
    process.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    process.add_argument("--log-json", action="store_true", help="log to stderr as JSON lines (default: only the progress bar)")

    batch = commands.add_parser("batch", help="inspect, pause, resume and cancel batches").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    blist = batch.add_parser("list", help="recent batches")
    blist.add_argument("--product")
    blist.add_argument("--limit", type=int, default=50)
    blist.add_argument("--json", action="store_true")
    bshow = batch.add_parser("show", help="one batch's summary")
    bshow.add_argument("id")
    bshow.add_argument("--json", action="store_true")
    bcancel = batch.add_parser("cancel", help="cancel the messages of a batch not sent yet")
    bcancel.add_argument("id")
    cli_senders.add_batch_controls(batch)
    cli_senders.add_optout_parser(commands, _Parser)

    ban = commands.add_parser("ban", help="addresses banned after failed FTP logins").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    ban_list = ban.add_parser("list", help="addresses banned now")
    ban_list.add_argument("--json", action="store_true")
    ban_lift = ban.add_parser("lift", help="lift the ban of an address (a running server notices within a second)")
    ban_lift.add_argument("address")

    report = commands.add_parser("report", help="usage reports").add_subparsers(dest="action", required=True, parser_class=_Parser)
    usage = report.add_parser("usage", help="messages, parts, delivered, failed and rejected by day or by product")
    usage.add_argument("--by", choices=("day", "product"), default="day")
    usage.add_argument("--product", help="only this product")
    usage.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="first day (UTC), inclusive")
    usage.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    formats = usage.add_mutually_exclusive_group()
    formats.add_argument("--csv", action="store_true", help="CSV instead of a table")
    formats.add_argument("--json", action="store_true", help="JSON instead of a table")
    usage.add_argument("--plot", type=Path, metavar="FILE.png|FILE.svg", help="also draw messages per day per product")

    status = commands.add_parser("status", help="what the running server is doing (exit 1 if it is not running or not ready)")
    status.add_argument("--json", action="store_true")
    return parser


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-06-30") from None


def main(argv: Sequence[str] | None = None) -> int:
    prog = invoked_as() if argv is None else "ftpbatch"
    try:
        args = build_parser(prog).parse_args(argv)
        args.prog = prog
        if args.command != "init":
            _require_root(args)
        handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except FtpbatchError as exc:
        print(f"ftpbatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ftpbatch batch list | head -3`: the reader has what it wanted. Point
        # stdout at /dev/null so the interpreter's last flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def _require_root(args: argparse.Namespace) -> None:
    """Every command but ``init`` needs a data root that ``init`` made (or a ledger or settings file in it).

    Otherwise a typo in ``--root`` would quietly create a new, empty root and
    report that it holds nothing.
    """
    root = root_path(args.root)
    if not (root / "ftpbatch.db").is_file() and not (root / SETTINGS_FILE).is_file():
        where = "" if args.root or os.environ.get("FTPBATCH_ROOT") else " (the default; give --root DIR or set FTPBATCH_ROOT)"
        raise NotFound(f"no ftpbatch data root at {root}{where}; run '{args.prog} --root {root} init' to create one")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.root, {**overrides, "ledger": {"url": getattr(args, "ledger", None)}})


# --- init -----------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    from .ledger import Ledger
    from .passwords import hash_password

    settings = _settings(args)
    storage = LocalStorage(settings.root)
    storage.prepare()
    tls_note = _init_tls(settings, generate=not args.no_tls)
    if tls_note and settings.settings_file.exists():
        tls_note += f'; to use it, set tls_cert = "{_TRIAL_CERT}" and tls_key = "{_TRIAL_KEY}" under [ftp] in {settings.settings_file}'
    if not settings.settings_file.exists():
        trial = {"ftp": {"tls_cert": _TRIAL_CERT, "tls_key": _TRIAL_KEY}} if tls_note else {}
        toml = default_toml(trial)
        settings.settings_file.write_text(toml, encoding="utf-8")
    ledger = Ledger(settings.ledger_location)
    print(f"data root ready: {settings.root}")
    if tls_note:
        print(tls_note)
    print(cli_ssh.init_host_key(settings))
    if args.demo:
        if ledger.get_product("demo") is None:
            password = secrets.token_urlsafe(12)
            ledger.add_product(Product("demo", hash_password(password), dial_prefix="44"))
            storage.ensure_home("demo")
            print(f"product 'demo' created (dial prefix 44); FTP user: demo  password: {password}")
            print("  keep the password: it is stored only as a hash")
        else:
            print(f"product 'demo' exists; new password: echo NEWPASS | {args.prog} product set demo --password-stdin")
    ledger.close()
    return 0


_TRIAL_CERT = "tls/cert.pem"
_TRIAL_KEY = "tls/key.pem"


def _init_tls(settings: Settings, generate: bool) -> str | None:
    """Make a self-signed pair in <root>/tls/ for trials, unless one exists or is configured."""
    cert, key = settings.root / _TRIAL_CERT, settings.root / _TRIAL_KEY
    if not generate or settings.ftp.tls_cert or cert.exists():
        return None
    from .security.tls import make_self_signed

    make_self_signed(cert, key)
    return (
        f"self-signed TLS certificate for trials: {cert} (FTPS clients must accept it, e.g. curl -k); "
        "replace it with a real one in [ftp] tls_cert / tls_key"
    )


# --- serve ----------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from .service import Gateway

    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise UsageError(f"--metrics-port {args.metrics_port} is not a TCP port (0-65535)")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    settings = _settings(
        args,
        ftp={
            "host": args.ftp_host,
            "port": args.ftp_port,
            "passive_ports": args.passive_ports,
            "masquerade_address": args.masquerade_address,
            # relative to where the command runs (the settings file's are relative to the root)
            "tls_cert": str(Path(args.tls_cert).resolve()) if args.tls_cert else None,
            "tls_key": str(Path(args.tls_key).resolve()) if args.tls_key else None,
        },
        sftp={"port": args.sftp_port, "host": args.sftp_host, "host_key": cli_ssh.host_key_override(args.sftp_host_key)},
        dispatch={"connector": args.connector},
        metrics={"port": args.metrics_port},
        node_id=args.node_id,
    )
    _configure_logging(json_lines=args.log_json)
    collect_less_often()
    gateway = Gateway(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    gateway.start()
    assert gateway.ftp is not None
    host, port = gateway.ftp.address
    products = [p.name for p in gateway.ledger.list_products()]
    print(f"ftpbatch {__version__} serving FTP on {host}:{port} (connector: {redact_url(settings.dispatch.connector)}, root: {settings.root})", flush=True)
    if gateway.sftp is not None:
        sftp_host, sftp_port = gateway.sftp.address
        print(f"serving SFTP on {sftp_host}:{sftp_port} (host key {gateway.sftp.fingerprint})", flush=True)
    if gateway.ops is not None:
        print(f"metrics on {gateway.ops.url}/metrics, health on {gateway.ops.url}/healthz, status on {gateway.ops.url}/status", flush=True)
    if products:
        print(f"log in as one of: {', '.join(products)} -- e.g. curl -T samples/hello.csv ftp://{products[0]}:PASSWORD@{host}:{port}/inbox/", flush=True)
    else:
        print(f"no products yet: create one with 'echo PASSWORD | {args.prog} product add NAME --password-stdin'", flush=True)
    while not stop.wait(0.5):
        pass
    log.info("shutting down")
    gateway.stop()
    return 0


def _configure_logging(json_lines: bool = False) -> None:
    configure_logs(json_lines=json_lines)


# --- product ----------------------------------------------------------------
def _product_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give, as Product fields; whether they are allowed is the domain's call
    (``product_checks.check_product``, applied by the ledger before anything is stored)."""
    changes: dict[str, Any] = {}
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if len(password) < 8:
            raise ProductError("the password must have at least 8 characters")
        from .passwords import hash_password

        changes["password_hash"] = hash_password(password)
    if args.allow_ip is not None:
        changes["allow_ip"] = parse_allow_ip(args.allow_ip)
    if args.dial_prefix is not None:
        changes["dial_prefix"] = args.dial_prefix or None
    if args.callback_url is not None:
        changes["callback_url"] = args.callback_url or None
    if args.callback_auth is not None:
        user, sep, password = args.callback_auth.partition(":")
        if not sep:
            raise ProductError("--callback-auth must look like USER:PASSWORD")
        changes["callback_user"], changes["callback_password"] = user, password
    if args.sender is not None:
        changes["sender"] = args.sender or None
    for flag, key in (
        ("callback_level", "callback_level"),
        ("max_parts", "max_parts"),
        ("require_tls", "require_tls"),
        ("allow_duplicates", "allow_duplicates"),
        ("duplicate_window", "duplicate_window_hours"),
        ("enabled", "enabled"),
        ("retention_days", "retention_days"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[key] = value
    if args.tps is not None:
        changes["tps"] = args.tps or None  # 0: no product limit
    if args.max_file_mb is not None:
        changes["max_file_bytes"] = int(args.max_file_mb * 1_000_000) or None
    if args.quota_mb is not None:
        changes["quota_bytes"] = int(args.quota_mb * 1_000_000) or None
    return changes


def cmd_product(args: argparse.Namespace) -> int:
    from .ledger import Ledger

    settings = _settings(args)
    ledger = Ledger(settings.ledger_location)
    storage = LocalStorage(settings.root)
    try:
        if args.action == "add":
            check_product_name(args.name)
            keys, keys_only = cli_ssh.key_changes(args)
            if not args.password_stdin and not (keys and keys_only):
                raise UsageError(
                    "product add needs --password-stdin (passwords are never taken from the command line), "
                    "or --ssh-key-file FILE --ssh-keys-only for a product that logs in by SSH key only"
                )
            changes = _product_changes(args)
            changes.setdefault("password_hash", cli_ssh.unusable_password_hash())
            # one record, checked whole, and its SSH keys, in one transaction:
            # a refusal leaves no half-made product behind
            with ledger.db.transaction():
                ledger.add_product(Product(args.name, **changes))
                shown = cli_ssh.store_keys(ledger, args.name, keys, keys_only)
            storage.ensure_home(args.name)
            print(f"product {args.name!r} added; FTP home {storage.home(args.name)}")
            if shown:
                print(shown)
        elif args.action == "set":
            keys, keys_only = cli_ssh.key_changes(args)  # checked before anything changes
            with ledger.db.transaction():  # the settings and the keys change together or not at all
                product = ledger.update_product(args.name, **_product_changes(args))
                shown = cli_ssh.store_keys(ledger, args.name, keys, keys_only)
            print(f"product {product.name!r} updated")
            if shown:
                print(shown)
        elif args.action == "list":
            products = ledger.list_products()
            if args.json:
                print(json.dumps([p.public_view() for p in products], indent=2))
            else:
                for p in products:
                    state = "enabled" if p.enabled else "disabled"
                    allow = ",".join(str(n) for n in p.allow_ip) or "any address"
                    print(f"{p.name:<20} {state:<9} prefix={p.dial_prefix or '-':<4} sender={p.sender or '-':<11} allow={allow}")
        elif args.action == "show":
            found = ledger.get_product(args.name)
            if found is None:
                raise NotFound(f"no product named {args.name!r}; see '{args.prog} product list'")
            print(json.dumps({**found.public_view(), **cli_ssh.ssh_view(ledger, found.name)}, indent=2))
    finally:
        ledger.close()
    return 0


# --- process ----------------------------------------------------------------
def cmd_process(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a readable file")
    settings = _settings(args, dispatch={"connector": args.connector})
    if args.log_json:
        _configure_logging(json_lines=True)
    return cli_process.run(settings, args.file, args.product, args.timeout, args.prog)


# --- batch ------------------------------------------------------------------
def cmd_batch(args: argparse.Namespace) -> int:
    from .ledger import Ledger
    from .report.files import Counts, iso, summary_document

    settings = _settings(args)
    ledger = Ledger(settings.ledger_location)
    try:
        if args.action == "list":
            batches = ledger.list_batches(args.product, args.limit)
            if args.json:
                docs = [summary_document(b, Counts.tally(ledger.status_counts(b.seq))) for b in batches]
                print(json.dumps(docs, indent=2))
            else:
                print(f"{'batch':<26}  {'product':<16} {'state':<11} {'rows':>8}  {'received':<24} file")
                for b in batches:
                    print(f"{b.id:<26}  {b.product:<16} {b.state:<11} {b.rows:>8}  {iso(b.received_at):<24} {b.file_name}")
            return 0
        batch = ledger.get_batch(args.id)
        if batch is None:
            raise NotFound(f"no batch with id {args.id!r}; see '{args.prog} batch list'")
        if args.action == "show":
            print(json.dumps(summary_document(batch, Counts.tally(ledger.status_counts(batch.seq))), indent=2))
        elif args.action == "cancel":
            cancelled = ledger.cancel_batch(batch.seq, "cli")
            print(f"batch {batch.id}: {cancelled} message(s) not yet sent are cancelled (status 006)")
        else:
            print(cli_senders.control_batch(ledger, batch, args.action))
    finally:
        ledger.close()
    return 0


# --- ban ----------------------------------------------------------------------
def cmd_ban(args: argparse.Namespace) -> int:
    import time

    from .ledger import Ledger
    from .report.files import iso

    settings = _settings(args)
    ledger = Ledger(settings.ledger_location)
    try:
        if args.action == "list":
            bans = ledger.active_bans(time.time())
            if args.json:
                print(json.dumps([{**ban._asdict(), "banned_until": iso(ban.banned_until), "created_at": iso(ban.created_at)} for ban in bans], indent=2))
            elif not bans:
                print("no address is banned")
            else:
                for ban in bans:
                    print(f"{ban.address:<40} until {iso(ban.banned_until)}  {ban.reason}")
        elif args.action == "lift":
            from .security.bans import normal_address

            address = normal_address(args.address)
            if not ledger.lift_ban(address):
                raise NotFound(f"{address} is not banned; see '{args.prog} ban list'")
            print(f"ban of {address} lifted")
    finally:
        ledger.close()
    return 0


# --- report -------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from .ledger import Ledger
    from .report.usage import as_csv, as_json, as_table, daily_by_product, usage_report

    if args.since and args.until and args.since > args.until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--plot {args.plot} must end in .png or .svg")
    if args.plot is not None:  # a missing extra is said before anything is printed
        from .report.plot import require_matplotlib

        require_matplotlib()
    settings = _settings(args)
    ledger = Ledger(settings.ledger_location)
    try:
        if args.product and ledger.get_product(args.product) is None:
            raise NotFound(f"no product named {args.product!r}; see '{args.prog} product list'")
        rows = usage_report(ledger, args.by, product=args.product, since=args.since, until=args.until)
        series = daily_by_product(ledger, product=args.product, since=args.since, until=args.until) if args.plot else None
    finally:
        ledger.close()
    render = as_csv if args.csv else as_json if args.json else as_table
    sys.stdout.write(render(rows, args.by))
    if series is not None:
        from .report.plot import write_plot

        title = "Messages per day" + (f" - {args.product}" if args.product else " per product")
        try:
            write_plot(args.plot, series, title)
        except OSError as exc:
            raise PathError(f"cannot write the plot to {args.plot}: {exc.strerror or exc}") from None
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": cmd_init,
    "serve": cmd_serve,
    "product": cmd_product,
    "process": cmd_process,
    "batch": cmd_batch,
    "ban": cmd_ban,
    "optout": lambda args: cli_senders.cmd_optout(args, _settings(args)),
    "report": cmd_report,
    "status": lambda args: cli_status.cmd_status(_settings(args), args.json),
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
