"""Modules imported on first use, so that quick commands start quickly.

``ftpbatch product list`` or ``status`` open the ledger, whose message code
uses pandas and pyarrow; importing those takes most of a second, which an
operator's command pays every time although it never touches a DataFrame.
A module that needs them for some of its functions binds them lazily::

    if TYPE_CHECKING:
        import pandas as pd
    else:
        pd = lazy_module("pandas")

The real import happens at the first attribute looked up (``pd.DataFrame``),
after which the proxy holds the module's names itself, so hot loops pay a
plain attribute lookup.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attribute: str) -> Any:  # only called for names not yet copied in
        module = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update(module.__dict__)
        return getattr(module, attribute)


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports it on first use."""
    return _LazyModule(name)
