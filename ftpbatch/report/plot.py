"""Messages per day per product as a stacked bar chart, drawn with matplotlib (SVG or PNG).

matplotlib is an optional extra (``pip install 'ftpbatch[plot]'``): the
gateway itself never draws, only ``ftpbatch report usage --plot`` does, so it
is imported here, on first use, and a missing install is one clear error
(:func:`require_matplotlib`) rather than a traceback. The figure is built on
the Agg canvas without pyplot (no global state, no display needed), with
constrained layout so the title, the axis labels and the legend are fitted
inside the figure whatever their length. SVG keeps its text as text
(``svg.fonttype: none``), so titles and product names can be searched.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtra, PathError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Colour-blind-safe palette (Okabe & Ito), then greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999", "#666666")
SUFFIXES = (".png", ".svg")


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, on the Agg backend; :class:`MissingExtra` when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtra(
            "drawing --plot needs matplotlib, the optional 'plot' extra: install it with "
            f"'{sys.executable} -m pip install matplotlib' (from a checkout: pip install -e '.[plot]')"
        ) from None
    matplotlib.use("Agg", force=True)
    return matplotlib


def usage_days(series: dict[str, dict[dt.date, int]]) -> list[dt.date]:
    """Every day from the first to the last with data (today when there is none)."""
    days_with_data = sorted({d for s in series.values() for d in s})
    if not days_with_data:
        return [dt.datetime.now(dt.timezone.utc).date()]
    first, last = days_with_data[0], days_with_data[-1]
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def usage_figure(series: dict[str, dict[dt.date, int]], title: str = "Messages per day") -> Figure:
    """A stacked bar chart: one bar per day, one colour per product, legend on the right."""
    matplotlib = require_matplotlib()
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    products = sorted(series)
    days = usage_days(series)
    width = min(16.0, max(7.0, 0.25 * len(days) + 4.5))
    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans"}):
        figure = Figure(figsize=(width, 5.0), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        x = [float(mdates.date2num(day)) for day in days]
        bottom = [0] * len(days)
        for n, product in enumerate(products):
            values = [series[product].get(day, 0) for day in days]
            axes.bar(x, values, bottom=bottom, width=0.8, label=product, color=PALETTE[n % len(PALETTE)])
            bottom = [b + v for b, v in zip(bottom, values)]
        axes.set_title(title, fontsize=14, loc="left", wrap=True)  # a long title wraps at the figure edge
        span = f"{days[0].isoformat()} to {days[-1].isoformat()}" if len(days) > 1 else days[0].isoformat()
        axes.set_xlabel(f"day (UTC), {span}")
        axes.set_ylabel("messages")
        axes.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        # a label every day, or every few days so that at most about twelve show
        axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, math.ceil(len(days) / 12))))
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
        axes.set_xlim(x[0] - 0.6, x[-1] + 0.6)
        axes.set_ylim(0, max(1, max(bottom, default=0)) * 1.05)
        axes.grid(axis="y", color="#DDDDDD")
        axes.set_axisbelow(True)
        axes.spines[["top", "right"]].set_visible(False)
        if products:
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="product")
    return figure


def write_plot(path: Path, series: dict[str, dict[dt.date, int]], title: str = "Messages per day") -> None:
    """Write the chart as SVG or PNG, chosen by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PathError(f"cannot draw {path.name}: the plot file must end in .png or .svg")
    matplotlib = require_matplotlib()
    figure = usage_figure(series, title)
    # no creation date in the file: the same data draws the same bytes
    metadata = {"Date": None} if suffix == ".svg" else {}
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ftpbatch"}):
        figure.savefig(path, format=suffix[1:], metadata=metadata)
