"""Test SMSCs: a real SMPP 3.4 server process on loopback, with one misbehaviour per mode.

Built on the ``smpp.pdu3`` codec (the PDU layer of ``smpp.twisted3``) and plain
asyncio, so it shares no code with the client under test (``smpp34``).
"""
