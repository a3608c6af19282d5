"""SMPP 3.4 connector (DESIGN.md §9): ``smpp://system_id:password@host:port?...``.

Built on smpp34 (Rust/tokio SMPP core with an asyncio binding); see
connector.py for the threading, window and retry rules, settings.py for the
URL options, status.py for the command_status map and receipts.py for how
receipts are recognised and their ids normalised.
"""

from .connector import SmppConnector
from .settings import SmppSettings, parse_url

__all__ = ["SmppConnector", "SmppSettings", "parse_url"]
