"""Field values of submit_sm and query_sm that follow from a message and the settings."""

from __future__ import annotations

from .settings import SmppSettings


def source_address(sender: str | None, s: SmppSettings) -> tuple[str, int, int]:
    """source_addr, TON, NPI: alphanumeric 5/0, digits 1/1 (international), none 0/0."""
    if not sender:
        addr, ton, npi = "", 0, 0
    elif sender.lstrip("+").isdigit():
        addr, ton, npi = sender.lstrip("+"), 1, 1
    else:
        addr, ton, npi = sender, 5, 0
    return addr, s.source_ton if s.source_ton is not None else ton, s.source_npi if s.source_npi is not None else npi


def relative_time(minutes: int) -> str:
    """SMPP relative time "YYMMDDhhmmss000R" (§7.1.1), at most 99 days."""
    minutes = max(1, min(minutes, 99 * 1440 + 23 * 60 + 59))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{mins:02d}00000R"
