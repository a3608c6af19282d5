"""What a submit_sm_resp command_status means for the message.

======================================  ==========================================
command_status                          outcome
======================================  ==========================================
0x00 ESME_ROK                           accepted: ``upstream_id``
0x58 ESME_RTHROTTLED, 0x14 ESME_RMSGQFUL  THROTTLE: pause the connector, re-send the
                                        part internally (``retry_max`` times), then
                                        ``retry=True``
generic_nack (any status)               THROTTLE as well: the PDU was not taken
0x08 ESME_RSYSERR, 0x64 ESME_RX_T_APPN  RETRY: ``retry=True`` (transient upstream
                                        trouble; the ledger re-queues the message)
0x04 ESME_RINVBNDSTS, 0x05 ESME_RALYBND REBIND: ``retry=True`` and the bind is
                                        dropped and made again
0x0B ESME_RINVDSTADR, 0x50 RINVDSTTON,  "105" invalid destination
0x51 RINVDSTNPI
0x0A ESME_RINVSRCADR, 0x48 RINVSRCTON,  "123" invalid sender ID
0x49 RINVSRCNPI
0x65 ESME_RX_P_APPN, 0x66 ESME_RX_R_APPN, "009" routing error (the SMSC will not take
0x0400-0x04FF (vendor specific)         this message on this route)
anything else                           "005" error with message (with the status
                                        name and number in ``error_text``)
======================================  ==========================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ... import codes


class Action(enum.Enum):
    OK = "ok"
    THROTTLE = "throttle"
    RETRY = "retry"
    REBIND = "rebind"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    code: str | None = None  # for FAIL: a §6 code
    text: str = ""


NAMES: dict[int, str] = {
    0x00: "ESME_ROK", 0x01: "ESME_RINVMSGLEN", 0x02: "ESME_RINVCMDLEN", 0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS", 0x05: "ESME_RALYBND", 0x06: "ESME_RINVPRTFLG", 0x07: "ESME_RINVREGDLVFLG",
    0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR", 0x0B: "ESME_RINVDSTADR", 0x0C: "ESME_RINVMSGID",
    0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD", 0x0F: "ESME_RINVSYSID", 0x11: "ESME_RCANCELFAIL",
    0x13: "ESME_RREPLACEFAIL", 0x14: "ESME_RMSGQFUL", 0x15: "ESME_RINVSERTYP", 0x33: "ESME_RINVNUMDESTS",
    0x34: "ESME_RINVDLNAME", 0x40: "ESME_RINVDESTFLAG", 0x42: "ESME_RINVSUBREP", 0x43: "ESME_RINVESMCLASS",
    0x44: "ESME_RCNTSUBDL", 0x45: "ESME_RSUBMITFAIL", 0x48: "ESME_RINVSRCTON", 0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON", 0x51: "ESME_RINVDSTNPI", 0x53: "ESME_RINVSYSTYP", 0x54: "ESME_RINVREPFLAG",
    0x55: "ESME_RINVNUMMSGS", 0x58: "ESME_RTHROTTLED", 0x61: "ESME_RINVSCHED", 0x62: "ESME_RINVEXPIRY",
    0x63: "ESME_RINVDFTMSGID", 0x64: "ESME_RX_T_APPN", 0x65: "ESME_RX_P_APPN", 0x66: "ESME_RX_R_APPN",
    0x67: "ESME_RQUERYFAIL", 0xC0: "ESME_RINVOPTPARSTREAM", 0xC1: "ESME_ROPTPARNOTALLWD",
    0xC2: "ESME_RINVPARLEN", 0xC3: "ESME_RMISSINGOPTPARAM", 0xC4: "ESME_RINVOPTPARAMVAL",
    0xFE: "ESME_RDELIVERYFAILURE", 0xFF: "ESME_RUNKNOWNERR",
}
_BY_NAME = {name: value for value, name in NAMES.items()}

THROTTLE = frozenset({0x58, 0x14})
RETRY = frozenset({0x08, 0x64})
REBIND = frozenset({0x04, 0x05})
DESTINATION = frozenset({0x0B, 0x50, 0x51})
SENDER = frozenset({0x0A, 0x48, 0x49})
ROUTING = frozenset({0x65, 0x66})


def describe(status: int) -> str:
    return f"{NAMES.get(status, 'vendor-specific' if 0x400 <= status <= 0x4FF else 'unknown')} (0x{status:08X})"


def submit_outcome(status: int) -> Outcome:
    """The outcome of a submit_sm_resp carrying ``status``."""
    if status == 0:
        return Outcome(Action.OK)
    text = f"SMSC answered {describe(status)}"
    if status in THROTTLE:
        return Outcome(Action.THROTTLE, text=text)
    if status in RETRY:
        return Outcome(Action.RETRY, text=text)
    if status in REBIND:
        return Outcome(Action.REBIND, text=text)
    if status in DESTINATION:
        return Outcome(Action.FAIL, codes.E_DESTINATION, text)
    if status in SENDER:
        return Outcome(Action.FAIL, codes.E_SENDER, text)
    if status in ROUTING or 0x400 <= status <= 0x4FF:
        return Outcome(Action.FAIL, codes.ROUTING_ERROR, text)
    return Outcome(Action.FAIL, codes.ERROR, text)


def status_from_error(message: str) -> int | None:
    """The command_status in an ``smpp34.SmppError`` text: "ESME_RSYSERR (0x00000008)"."""
    start = message.rfind("(0x")
    if start != -1:
        try:
            return int(message[start + 1 : message.index(")", start)], 16)
        except ValueError:
            pass
    return _BY_NAME.get(message.split(" ", 1)[0].strip())
