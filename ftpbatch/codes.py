"""The status and error codes of the contract (DESIGN.md §6).

Codes are three-digit strings everywhere (ledger, reports, callbacks) so that
``"004"`` never turns into ``4`` on the way through pandas or JSON.
"""

from __future__ import annotations

# --- message status -------------------------------------------------------
QUEUED = "002"
SUBMITTED = "003"  # accepted by the upstream gateway
DELIVERED = "004"  # delivery receipt: received by recipient
ERROR = "005"  # error with message (rejected row, permanent submit error)
CANCELLED = "006"
UNDELIVERABLE = "007"  # receipt: undeliverable / rejected
ROUTING_ERROR = "009"
EXPIRED = "010"
SCHEDULED = "011"  # queued for later delivery

STATUS_TEXT: dict[str, str] = {
    QUEUED: "queued",
    SUBMITTED: "delivered to upstream gateway",
    DELIVERED: "received by recipient",
    ERROR: "error with message",
    CANCELLED: "cancelled",
    UNDELIVERABLE: "error delivering message",
    ROUTING_ERROR: "routing error",
    EXPIRED: "expired",
    SCHEDULED: "queued for later delivery",
}

#: Statuses after which nothing more happens to a message.
FINAL_STATUSES = frozenset({DELIVERED, ERROR, CANCELLED, UNDELIVERABLE, ROUTING_ERROR, EXPIRED})
#: Statuses of messages still waiting to be submitted.
PENDING_STATUSES = frozenset({QUEUED, SCHEDULED})

# --- error codes ----------------------------------------------------------
E_AUTH = "001"
E_IP_LOCKDOWN = "007"
E_MALFORMED = "100"
E_PARAMETERS = "101"
E_DESTINATION = "105"
E_EMPTY_MESSAGE = "107"
E_TOO_MANY_PARTS = "113"
E_UNICODE = "116"
E_DELIVERY_TIME = "120"
E_BLOCKED = "121"
E_OPTED_OUT = "122"
E_SENDER = "123"
E_DUPLICATE_FILE = "130"
E_FILE_TOO_LARGE = "131"
E_DUPLICATE_DESTINATION = "132"
E_INTERNAL = "901"

ERROR_TEXT: dict[str, str] = {
    E_AUTH: "authentication failed",
    E_IP_LOCKDOWN: "IP lock-down violation",
    E_MALFORMED: "data malformed",
    E_PARAMETERS: "invalid or missing parameters",
    E_DESTINATION: "invalid destination address",
    E_EMPTY_MESSAGE: "empty message",
    E_TOO_MANY_PARTS: "too many message parts",
    E_UNICODE: "invalid unicode data",
    E_DELIVERY_TIME: "invalid delivery time",
    E_BLOCKED: "destination mobile number blocked",
    E_OPTED_OUT: "destination mobile opted out",
    E_SENDER: "invalid sender ID",
    E_DUPLICATE_FILE: "duplicate file",
    E_FILE_TOO_LARGE: "file too large",
    E_DUPLICATE_DESTINATION: "duplicate destination in batch",
    E_INTERNAL: "internal error",
}
