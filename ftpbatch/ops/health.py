"""What the ops room needs to know about a gateway, and the component states it derives."""

from __future__ import annotations

from typing import Any, Protocol

from ..config import Settings
from ..ledger import Ledger


class GatewayView(Protocol):
    """The part of a running gateway that metrics, health and status read."""

    @property
    def settings(self) -> Settings: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def node_id(self) -> str: ...

    @property
    def ready(self) -> bool:
        """Started, every service healthy and the connector up: what /healthz answers 200 for."""
        ...

    def components(self) -> dict[str, dict[str, Any]]:
        """Per service (and the connector), in start order: ``{"up": bool, ...details}``."""
        ...


def component_states(gateway: GatewayView) -> dict[str, bool]:
    return {name: bool(state["up"]) for name, state in gateway.components().items()}
