"""Usage over time, painted with QPainter: requests per day as stacked bars (one colour per user
or team) and tokens per day as a line on its own scale."""

from __future__ import annotations

import datetime as dt
import itertools

from desktop.qt import QColor, QPainter, QPaintEvent, QPen, QPointF, QRectF, Qt, QWidget
from desktop.services.audit import UsageSeries

__all__ = ["UsageChart"]

_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]


class UsageChart(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(180)
        self.days: list[dt.date] = []
        self.series: list[str] = []
        self.data: UsageSeries = {}

    def set_usage(self, data: UsageSeries, *, first: dt.date, last: dt.date) -> None:
        self.data = data
        self.days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        self.series = sorted({name for per_day in data.values() for name in per_day})
        self.update()

    def clear(self) -> None:
        self.data, self.days, self.series = {}, [], []
        self.update()

    def totals(self) -> tuple[int, int]:
        """All requests and tokens in the chart."""
        reqs = sum(r for per_day in self.data.values() for r, _ in per_day.values())
        toks = sum(t for per_day in self.data.values() for _, t in per_day.values())
        return reqs, toks

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        margin_l, margin_r, margin_t, margin_b = 44, 96, 12, 40
        plot = QRectF(margin_l, margin_t, max(10, self.width() - margin_l - margin_r), max(10, self.height() - margin_t - margin_b))
        p.setPen(QColor("#cccccc"))
        p.drawRect(plot)
        if not self.days:
            p.setPen(QColor("#777777"))
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No usage loaded")
            p.end()
            return
        req_max = max([sum(r for r, _ in self.data.get(d, {}).values()) for d in self.days] + [1])
        tok_max = max([sum(t for _, t in self.data.get(d, {}).values()) for d in self.days] + [1])
        slot = plot.width() / len(self.days)
        bar_w = max(2.0, slot * 0.6)
        colors = {name: QColor(_PALETTE[i % len(_PALETTE)]) for i, name in enumerate(self.series)}
        points: list[QPointF] = []
        for i, day in enumerate(self.days):
            x = plot.left() + i * slot + (slot - bar_w) / 2
            y = plot.bottom()
            per_day = self.data.get(day, {})
            for name in self.series:
                requests = per_day.get(name, (0, 0))[0]
                if requests:
                    h = plot.height() * requests / req_max
                    p.fillRect(QRectF(x, y - h, bar_w, h), colors[name])
                    y -= h
            tokens = sum(t for _, t in per_day.values())
            points.append(QPointF(plot.left() + i * slot + slot / 2, plot.bottom() - plot.height() * tokens / tok_max))
            if len(self.days) <= 14 or i % max(1, len(self.days) // 7) == 0:
                p.setPen(QColor("#555555"))
                p.drawText(QRectF(plot.left() + i * slot - 10, plot.bottom() + 2, slot + 20, 16),
                           Qt.AlignmentFlag.AlignHCenter, day.strftime("%m-%d"))
        p.setPen(QPen(QColor("#222222"), 2))
        for a, b in itertools.pairwise(points):
            p.drawLine(a, b)
        p.setPen(QColor("#555555"))
        p.drawText(QRectF(0, plot.top() - 2, margin_l - 4, 16), Qt.AlignmentFlag.AlignRight, str(req_max))
        p.drawText(QRectF(0, plot.bottom() - 14, margin_l - 4, 16), Qt.AlignmentFlag.AlignRight, "0")
        p.drawText(QRectF(plot.right() + 4, plot.top() - 2, margin_r - 8, 16), Qt.AlignmentFlag.AlignLeft, f"{tok_max:,} tokens")
        x = plot.left()
        for name in self.series:
            p.fillRect(QRectF(x, self.height() - 16, 10, 10), colors[name])
            p.setPen(QColor("#333333"))
            p.drawText(QRectF(x + 14, self.height() - 20, 140, 16), Qt.AlignmentFlag.AlignLeft, name)
            x += 24 + p.fontMetrics().horizontalAdvance(name)
        p.drawText(QRectF(self.width() - 264, self.height() - 20, 260, 16), Qt.AlignmentFlag.AlignRight,
                   "bars: requests · line: tokens")
        p.end()
