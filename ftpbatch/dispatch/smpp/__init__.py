"""SMPP 3.4 connector (DESIGN.md §9): ``smpp://system_id:password@host:port?...``.

Our own SMPP session (session.py) on an asyncio/uvloop loop, smpp34's codec
for submit_sm and deliver_sm (pdu.py); see connector.py for the threading,
sender.py for the window and retry rules, inbound.py for receipts and MO
(answered only once stored), queries.py for query_sm, settings.py for the URL
options, status.py for the command_status map and receipts.py for how
receipts are recognised and their ids normalised.
"""

from .connector import SmppConnector
from .settings import SmppSettings, parse_url

__all__ = ["SmppConnector", "SmppSettings", "parse_url"]
