"""STOP replies: an MO message whose text is an opt-out keyword opts its sender out.

Listens to the MO messages the dispatcher stored (``Dispatcher.add_mo_listener``).
An MO to a product's sender address (``product.sender``, compared as digits
without ``+`` / ``00``, or as written for a short code) whose whole text,
trimmed and in any case, is one of ``[dispatch] optout_keywords`` puts the
MO's source on that product's opt-out list, source ``stop-reply``. An MO
whose destination is no product's sender is counted and logged, never
guessed: it opts nobody out.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from ..ledger.protocol import DispatchLedger
from ..models import MoMessage, Product
from ..rules.numbers import normalise_list

log = logging.getLogger(__name__)


def address_key(address: str) -> str:
    """A sender address as MOs name it: digits without ``+`` or ``00``; anything else as written, upper-case."""
    text = address.strip().replace(" ", "")
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00") and text.isdigit():
        text = text[2:]
    return text.upper()


class StopReplies:
    """An MO listener; ``observe(result)`` counts each keyword MO: ``optout`` or ``unmatched``."""

    def __init__(self, ledger: DispatchLedger, keywords: frozenset[str], observe: Callable[[str], None] = lambda result: None) -> None:
        self.ledger = ledger
        self.keywords = keywords
        self.observe = observe

    def __call__(self, messages: Sequence[MoMessage]) -> None:
        stops = [m for m in messages if m.concat is None and m.text.strip().upper() in self.keywords]
        if not stops:
            return
        by_sender: dict[str, list[Product]] = {}
        for product in self.ledger.list_products():
            if product.sender:
                by_sender.setdefault(address_key(product.sender), []).append(product)
        for mo in stops:
            products = by_sender.get(address_key(mo.destination), [])
            if not products:
                self.observe("unmatched")
                log.warning("MO %r from %s to %s matches no product's sender address: nobody opted out",
                            mo.text.strip(), mo.source, mo.destination)
                continue
            for product in products:
                (number,) = normalise_list([mo.source], product.dial_prefix)
                if number is None:
                    self.observe("unmatched")
                    log.warning("MO %r to %s: its source %r is no phone number; nobody opted out",
                                mo.text.strip(), mo.destination, mo.source)
                    continue
                added = self.ledger.add_optouts(product.name, [number], "stop-reply")
                self.observe("optout")
                log.info("MO %r from %s: %s opted out of %s%s", mo.text.strip(), mo.source, number, product.name,
                         "" if added else " (already on the list)")
