"""Bar charts drawn as inline SVG on the server, so pages need no script and no other host.

Colours and fonts are SVG presentation attributes, not `style` attributes, because the pages'
Content-Security-Policy allows only the stylesheet served by the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from html import escape

from markupsafe import Markup

from tallystick.server.web import format_credits

# Drawing areas in SVG user units. Each chart is drawn twice, wide for desktops and narrow for
# phones, and the stylesheet shows one of them, so its text stays readable at either width.
_WIDE = (960, 240)
_NARROW = (360, 220)
_LEFT = 44
_RIGHT = 8
_TOP = 12
_BOTTOM = 28
_BAR_COLOUR = "#2f5bd3"
_GRID_COLOUR = "#d5dae3"
_TEXT_COLOUR = "#5b6474"


@dataclass(frozen=True)
class DayValue:
    day: date
    value: Decimal


def fill_days(values: dict[date, Decimal], first: date, last: date) -> list[DayValue]:
    """Return one point per day from `first` to `last`, zero where `values` has none."""
    points = []
    day = first
    while day <= last:
        points.append(DayValue(day, values.get(day, Decimal(0))))
        day += timedelta(days=1)
    return points


def day_bar_chart(points: list[DayValue], *, label: str, unit: str) -> Markup:
    """Return an SVG bar chart of one value per day; `unit` names the value in tooltips."""
    wide = _draw(points, label=label, unit=unit, size=_WIDE, css_class="chart chart-wide")
    narrow = _draw(points, label=label, unit=unit, size=_NARROW, css_class="chart chart-narrow")
    return Markup(wide + narrow)


def _draw(points: list[DayValue], *, label: str, unit: str, size: tuple[int, int], css_class: str) -> str:
    width, height = size
    peak = max((point.value for point in points), default=Decimal(0))
    top = _nice_ceiling(peak)
    plot_width = width - _LEFT - _RIGHT
    plot_height = height - _TOP - _BOTTOM
    slot = plot_width / max(len(points), 1)
    bar_width = max(slot * 0.7, 1.0)

    opening = (
        f'<svg class="{css_class}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        f'font-family="system-ui, sans-serif" font-size="12">'
    )
    parts = [opening, f"<title>{escape(label)}</title>"]
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):
        y = _TOP + plot_height - float(fraction) * plot_height
        parts.append(
            f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID_COLOUR}" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{_TEXT_COLOUR}">'
            f"{escape(format_credits(top * fraction))}</text>"
        )

    for index, point in enumerate(points):
        bar_height = 0.0 if top == 0 else float(point.value / top) * plot_height
        x = _LEFT + index * slot + (slot - bar_width) / 2
        y = _TOP + plot_height - bar_height
        tooltip = f"{point.day.isoformat()}: {format_credits(point.value)} {unit}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{bar_height:.1f}" fill="{_BAR_COLOUR}" '
            f'data-day="{point.day.isoformat()}" data-value="{_plain(point.value)}"><title>{escape(tooltip)}</title></rect>'
        )

    for index in _label_positions(len(points)):
        x = _LEFT + index * slot + slot / 2
        # The first and last labels align to the plot's edges, so they are never cut off.
        anchor = "middle"
        if index == 0:
            anchor = "start"
            x = _LEFT
        elif index == len(points) - 1:
            anchor = "end"
            x = width - _RIGHT
        parts.append(
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" fill="{_TEXT_COLOUR}">'
            f"{points[index].day.strftime('%b %-d')}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _plain(value: Decimal) -> str:
    """Return a decimal without exponent or trailing zeros, such as Decimal("3.000") -> "3"."""
    return "0" if value == 0 else format(value.normalize(), "f")


def _label_positions(count: int) -> list[int]:
    """Return the indexes of the days labelled under the bars: first, middle and last."""
    if count == 0:
        return []
    return sorted({0, count // 2, count - 1})


def _nice_ceiling(value: Decimal) -> Decimal:
    """Return the smallest of 1, 2 or 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return Decimal(1)
    magnitude = Decimal(10) ** (value.adjusted())
    for step in (1, 2, 5, 10):
        if magnitude * step >= value:
            return magnitude * step
    return magnitude * 10
