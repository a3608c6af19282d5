"""Messages per day per product as a stacked bar chart, written as SVG or PNG.

No plotting library: the chart is a handful of rectangles and labels, laid
out once as a scene and rendered either as SVG text or rasterised into a
PNG (zlib + a 5x7 bitmap font). That keeps matplotlib, and its hundred
megabytes, out of a gateway that draws one kind of chart.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..errors import PathError

# Colour-blind-safe palette (Okabe & Ito), then greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999", "#666666")
_INK, _GRID, _PAPER = "#222222", "#DDDDDD", "#FFFFFF"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    color: str
    title: str | None = None  # SVG tooltip


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    size: int = 12  # px; PNG uses multiples of the 7 px font
    anchor: str = "start"  # start | middle | end
    color: str = _INK


@dataclass
class Scene:
    width: int
    height: int
    items: list[Rect | Text]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def usage_scene(series: dict[str, dict[dt.date, int]], title: str = "Messages per day") -> Scene:
    """Lay out a stacked bar chart: one bar per day, one colour per product."""
    products = sorted(series)
    days_with_data = sorted({d for s in series.values() for d in s})
    if days_with_data:
        first, last = days_with_data[0], days_with_data[-1]
        days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    else:
        days = [dt.datetime.now(dt.timezone.utc).date()]
    totals = [sum(series[p].get(d, 0) for p in products) for d in days]
    top = nice_ceiling(max(totals, default=0))

    left, right, upper, lower = 90, 200, 50, 70
    slot = max(4, min(40, 1000 // len(days)))
    plot_w, plot_h = slot * len(days), 400
    width, height = left + plot_w + right, upper + plot_h + lower
    items: list[Rect | Text] = [Rect(0, 0, width, height, _PAPER)]
    items.append(Text(left, 30, title, size=16))

    # y axis: grid lines and labels at fifths of the nice maximum
    for i in range(6):
        value = top * i / 5
        y = upper + plot_h - plot_h * i / 5
        items.append(Rect(left, y, plot_w, 1, _GRID))
        items.append(Text(left - 8, y + 5, f"{value:,.0f}" if value == int(value) else f"{value:,.1f}", size=12, anchor="end"))

    # bars, stacked in product order
    bar_w = max(2, slot - max(1, slot // 5))
    for i, day in enumerate(days):
        y = upper + plot_h
        for n, product in enumerate(products):
            value = series[product].get(day, 0)
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            items.append(Rect(left + i * slot + (slot - bar_w) / 2, y, bar_w, h, PALETTE[n % len(PALETTE)],
                              title=f"{day.isoformat()} {product}: {value:,}"))

    # x axis: day labels, spaced so they do not overlap (MM-DD, 5 characters)
    items.append(Rect(left, upper + plot_h, plot_w, 2, _INK))
    every = max(1, math.ceil(70 / slot))
    for i in range(0, len(days), every):
        x = left + i * slot + slot / 2
        items.append(Rect(x, upper + plot_h + 2, 1, 5, _INK))
        items.append(Text(x, upper + plot_h + 24, days[i].strftime("%m-%d"), size=12, anchor="middle"))
    span = f"{days[0].isoformat()} to {days[-1].isoformat()} (UTC)" if len(days) > 1 else f"{days[0].isoformat()} (UTC)"
    items.append(Text(left + plot_w / 2, upper + plot_h + 54, span, size=12, anchor="middle"))

    # legend
    lx = left + plot_w + 24
    for n, product in enumerate(products):
        y = upper + 10 + n * 24
        items.append(Rect(lx, y, 14, 14, PALETTE[n % len(PALETTE)]))
        items.append(Text(lx + 22, y + 13, product, size=12))
    return Scene(width, height, items)


# --- SVG ------------------------------------------------------------------------
def render_svg(scene: Scene) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{scene.width}" height="{scene.height}" '
        f'viewBox="0 0 {scene.width} {scene.height}" font-family="DejaVu Sans, Arial, sans-serif">',
    ]
    for item in scene.items:
        if isinstance(item, Rect):
            rect = f'<rect x="{item.x:.1f}" y="{item.y:.1f}" width="{item.w:.1f}" height="{item.h:.1f}" fill="{item.color}"'
            out.append(f"{rect}><title>{escape(item.title)}</title></rect>" if item.title else f"{rect}/>")
        else:
            out.append(
                f'<text x="{item.x:.1f}" y="{item.y:.1f}" font-size="{item.size}" text-anchor={quoteattr(item.anchor)} '
                f'fill="{item.color}">{escape(item.text)}</text>'
            )
    out.append("</svg>")
    return ("\n".join(out) + "\n").encode("utf-8")


# --- PNG ------------------------------------------------------------------------
# 5x7 glyphs, one string of 7 rows each; lower case is drawn as upper case.
_GLYPHS = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.", "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####", "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.", "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.", "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.", "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#", "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.", "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####", "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####", "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#", "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#", "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.", "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#", "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.", "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.", "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "-": "..... ..... ..... .###. ..... ..... .....", ".": "..... ..... ..... ..... ..... .##.. .##..",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....", "_": "..... ..... ..... ..... ..... ..... #####",
    "/": "..... ....# ...#. ..#.. .#... #.... .....", "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...", ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    " ": "..... ..... ..... ..... ..... ..... .....", "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
}
_FONT = {c: [row for row in g.split()] for c, g in _GLYPHS.items()}


def _rgb(color: str) -> bytes:
    return bytes.fromhex(color.lstrip("#"))


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(_rgb(_PAPER) * (width * height))

    def fill(self, x0: float, y0: float, w: float, h: float, color: bytes) -> None:
        x1, y1 = min(self.width, round(x0 + w)), min(self.height, round(y0 + h))
        x0, y0 = max(0, round(x0)), max(0, round(y0))
        if x1 <= x0 or y1 <= y0:
            return
        row = color * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, item: Text) -> None:
        scale = max(1, round(item.size / 7))
        advance = 6 * scale
        width = advance * len(item.text) - scale
        x = item.x - (width / 2 if item.anchor == "middle" else width if item.anchor == "end" else 0)
        top = item.y - 7 * scale
        color = _rgb(item.color)
        for n, char in enumerate(item.text):
            glyph = _FONT.get(char.upper(), _FONT["?"])
            for r, bits in enumerate(glyph):
                for c, bit in enumerate(bits):
                    if bit == "#":
                        self.fill(x + n * advance + c * scale, top + r * scale, scale, scale, color)

    def png(self) -> bytes:
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def render_png(scene: Scene) -> bytes:
    canvas = _Canvas(scene.width, scene.height)
    for item in scene.items:
        if isinstance(item, Rect):
            canvas.fill(item.x, item.y, item.w, item.h, _rgb(item.color))
        else:
            canvas.text(item)
    return canvas.png()


def write_plot(path: Path, series: dict[str, dict[dt.date, int]], title: str = "Messages per day") -> None:
    """Write the chart as SVG or PNG, chosen by the file's suffix."""
    scene = usage_scene(series, title)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        data = render_svg(scene)
    elif suffix == ".png":
        data = render_png(scene)
    else:
        raise PathError(f"cannot draw {path.name}: the plot file must end in .png or .svg")
    path.write_bytes(data)
