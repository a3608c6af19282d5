"""Build a connector from its URL (``sim``, ``sim://?...``, ``smpp://...``)."""

from __future__ import annotations

from ..errors import ConfigError
from .connector import Connector


def make_connector(url: str) -> Connector:
    scheme = url.split(":", 1)[0].lower() if ":" in url else url.lower()
    if scheme == "sim":
        from .sim import SimConnector

        return SimConnector.from_url(url)
    if scheme == "smpp":
        from .smpp import SmppConnector  # imported lazily: only production needs it

        return SmppConnector.from_url(url)
    raise ConfigError(f"unknown connector {url!r}: use 'sim' or 'smpp://system_id:password@host:port'")
