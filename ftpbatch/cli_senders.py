"""The command line's parts for the sender folders: ``optout add|remove|list``, ``batch pause|resume``.

Beside cli.py (which only wires them in). Each change goes to the ledger; a
running server rewrites /reports/optout.csv within a second and its leases
see a pause or resume at once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import codes
from .config import Settings
from .errors import NotFound, PathError, UsageError


def add_optout_parser(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    optout = commands.add_parser("optout", help="a product's opt-out list (numbers rejected with 122)").add_subparsers(
        dest="action", required=True, parser_class=parser_class
    )
    for action, text in (("add", "put numbers on the list"), ("remove", "take numbers off the list")):
        sub = optout.add_parser(action, help=text)
        sub.add_argument("--product", required=True)
        sub.add_argument("numbers", nargs="*", metavar="NUMBER", help="national numbers take the product's dial prefix")
        sub.add_argument("--file", type=Path, help="one number per line, or a CSV with a 'to' column")
    listing = optout.add_parser("list", help="the numbers on the list, with since and source")
    listing.add_argument("--product", required=True)
    listing.add_argument("--json", action="store_true")


def add_batch_controls(batch: Any) -> None:
    for action, text in (("pause", "stop sending a batch (messages in flight finish)"), ("resume", "send a paused batch again")):
        batch.add_parser(action, help=text).add_argument("id")


def control_batch(ledger: Any, batch: Any, action: str) -> str:
    """``batch pause|resume``: the line to print."""
    if batch.state in ("complete", "rejected", "checked"):
        raise UsageError(f"batch {batch.id} is {batch.state}: there is nothing left to {action}")
    if action == "pause":
        changed = ledger.pause_batch(batch.seq, "cli")
        return f"batch {batch.id}: paused (messages in flight finish)" if changed else f"batch {batch.id} was paused already"
    changed = ledger.resume_batch(batch.seq, "cli")
    return f"batch {batch.id}: resumed" if changed else f"batch {batch.id} was not paused"


def cmd_optout(args: argparse.Namespace, settings: Settings) -> int:
    from .ledger import Ledger

    ledger = Ledger(settings.ledger_location)
    try:
        return _optout(args, ledger, args.prog)
    finally:
        ledger.close()


def _optout(args: argparse.Namespace, ledger: Any, prog: str) -> int:
    from .intake.sender_folders import BadNumbers, normalise_numbers, read_numbers
    from .report.files import iso

    product = ledger.get_product(args.product)
    if product is None:
        raise NotFound(f"no product named {args.product!r}; see '{prog} product list'")
    if args.action == "list":
        entries = ledger.list_optouts(product.name)
        if args.json:
            print(json.dumps([{"number": e.number, "since": iso(e.since), "source": e.source} for e in entries], indent=2))
        elif not entries:
            print(f"no number is on the opt-out list of {product.name}")
        else:
            for e in entries:
                print(f"{e.number:<16} {iso(e.since)}  {e.source}")
        return 0
    cells = [(n, text) for n, text in enumerate(args.numbers, 1)]
    if args.file is not None:
        try:
            cells += read_numbers(args.file.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise PathError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if not cells:
        raise UsageError("give the numbers, or --file FILE")
    good, bad = normalise_numbers(cells, product.dial_prefix)
    if bad:
        raise UsageError(f"nothing changed: {BadNumbers(bad)}", code=codes.E_DESTINATION)
    if args.action == "add":
        changed = ledger.add_optouts(product.name, good, "cli")
        print(f"{changed} number(s) added to the opt-out list of {product.name} ({len(good) - changed} were on it already)")
    else:
        changed = ledger.remove_optouts(product.name, good)
        print(f"{changed} number(s) removed from the opt-out list of {product.name} ({len(good) - changed} were not on it)")
    return 0
