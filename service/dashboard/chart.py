"""Geometry of the sent-per-minute bar chart, drawn by the template as inline SVG.

The numbers are worked out here, where they can be tested; the template only
places rectangles and labels. No script draws anything, so the chart is the
same with JavaScript off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from service.dashboard.queries import DeliveryActivity

WIDTH = 640
HEIGHT = 150
_LEFT = 34  # room for the y-axis labels
_BOTTOM = 18  # room for the time labels
_TOP = 8
_GAP = 1.5
_TICK_EVERY_MINUTES = 15


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the tooltip: "12:34 UTC: 17 sent"


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str
    anchor: str = "middle"  # SVG text-anchor


@dataclass(frozen=True, slots=True)
class GridLine:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    left: int
    baseline: float
    bars: list[Bar]
    ticks: list[Tick]
    grid: list[GridLine]
    total: int
    peak: int


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``value``."""
    if value <= 1:
        return 1
    magnitude = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    raise AssertionError("unreachable: 10 * magnitude exceeds value")


def sent_per_minute_chart(activity: DeliveryActivity) -> BarChart:
    counts = activity.sent_per_minute
    peak = max(counts, default=0)
    scale_top = nice_ceiling(peak)
    baseline = HEIGHT - _BOTTOM
    plot_height = baseline - _TOP
    slot = (WIDTH - _LEFT) / max(1, len(counts))
    first_minute = activity.current_minute - timedelta(minutes=len(counts) - 1)
    bars, ticks = [], []
    for index, count in enumerate(counts):
        minute = first_minute + timedelta(minutes=index)
        height = plot_height * count / scale_top
        x = _LEFT + index * slot
        bars.append(
            Bar(
                x=round(x + _GAP / 2, 2),
                y=round(baseline - height, 2),
                width=round(slot - _GAP, 2),
                height=round(height, 2),
                label=f"{minute:%H:%M} UTC: {count} sent",
            )
        )
        minutes_ago = len(counts) - 1 - index
        if minutes_ago == 0:  # flush with the right edge, so the label is not cut off
            ticks.append(Tick(x=round(x + slot, 2), label="now", anchor="end"))
        elif minutes_ago % _TICK_EVERY_MINUTES == 0:
            ticks.append(Tick(x=round(x + slot / 2, 2), label=f"{minute:%H:%M}"))
    grid = [GridLine(y=float(_TOP), label=str(scale_top))]
    if scale_top % 2 == 0:  # a half line only where it falls on a whole number
        grid.append(GridLine(y=round(baseline - plot_height / 2, 2), label=str(scale_top // 2)))
    return BarChart(
        width=WIDTH,
        height=HEIGHT,
        left=_LEFT,
        baseline=baseline,
        bars=bars,
        ticks=ticks,
        grid=grid,
        total=sum(counts),
        peak=peak,
    )
