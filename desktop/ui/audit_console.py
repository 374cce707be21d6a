"""The audit console: filtered, server-paged events; a detail pane (old -> new values, sealed
content for auditors); chain verification; export to JSONL or CEF; usage per day."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from desktop.client.api import AuditQuery
from desktop.qt import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateTime,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    Qt,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QTimeZone,
    QVBoxLayout,
    QWidget,
)
from desktop.services.audit import AuditService, UsageSeries
from desktop.ui.dialogs import explain
from desktop.ui.usage_chart import UsageChart

__all__ = ["AuditConsole", "describe_record"]

_COLUMNS = ("seq", "time", "actor", "action", "target", "outcome")
_OUTCOMES = ("", "success", "failure", "denied", "cancelled", "error")


def _esc(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def describe_record(record: dict[str, Any]) -> str:
    """The detail pane's HTML: fields, old -> new values for changes, then the other details."""
    rows = [f"<b>#{record['seq']}</b> {_esc(record['action'])} · {_esc(record['outcome'])}",
            f"time: {_esc(record['time'])}", f"actor: {_esc(record['actor'])}", f"target: {_esc(record['target'])}",
            f"request: {_esc(record.get('request_id', ''))} from {_esc(record.get('client_address', ''))}"]
    details = dict(record.get("details") or {})
    old, new = details.pop("old", None), details.pop("new", None)
    if isinstance(old, dict) or isinstance(new, dict):
        old, new = old or {}, new or {}
        rows.append("<b>changes</b>")
        for key in sorted(set(old) | set(new)):
            rows.append(f"&nbsp;&nbsp;{_esc(key)}: {_esc(json.dumps(old.get(key)))} → {_esc(json.dumps(new.get(key)))}")
    if details:
        rows.append("<b>details</b>")
        rows.extend(f"&nbsp;&nbsp;{_esc(k)}: {_esc(json.dumps(v))}" for k, v in sorted(details.items()))
    content = record.get("content")
    if content:
        rows.append(f"<b>content</b>: {_esc(content.get('mode', ''))}")
    rows.append(f"<small>hash {_esc(record.get('hash', ''))}<br>prev {_esc(record.get('prev_hash', ''))}</small>")
    return "<br>".join(rows)


def _utc(edit: QDateTimeEdit) -> dt.datetime:
    seconds = edit.dateTime().toSecsSinceEpoch()
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class AuditConsole(QWidget):
    def __init__(
        self,
        service: AuditService,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self._clock = clock
        self.can_decrypt = False
        self.records: list[dict[str, Any]] = []
        self._cursors: list[int | None] = [None]  # cursor of each page seen so far
        self._next: int | None = None
        self._query = AuditQuery()
        self.page_size = 50

        self.actor = QLineEdit()
        self.actor.setPlaceholderText("actor")
        self.action = QLineEdit()
        self.action.setPlaceholderText("action, or prefix like auth.")
        self.outcome = QComboBox()
        self.outcome.addItems(_OUTCOMES)
        self.use_since = QCheckBox("from")
        self.since = QDateTimeEdit(QDateTime.currentDateTimeUtc().addDays(-7))
        self.use_until = QCheckBox("until")
        self.until = QDateTimeEdit(QDateTime.currentDateTimeUtc().addDays(1))
        for edit in (self.since, self.until):
            edit.setTimeZone(QTimeZone.utc())
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
        self.search = QPushButton("Search")
        self.prev_page = QPushButton("◀ Newer")
        self.next_page = QPushButton("Older ▶")
        self.page_label = QLabel("")
        filters = QHBoxLayout()
        for w in (self.actor, self.action, self.outcome, self.use_since, self.since, self.use_until, self.until, self.search):
            filters.addWidget(w)

        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.detail = QTextBrowser()
        self.show_sealed = QPushButton("Show sealed content")
        self.show_sealed.setEnabled(False)
        self.sealed_view = QTextBrowser()
        self.sealed_view.hide()

        self.verify = QPushButton("Verify chain")
        self.verify_result = QLabel("")
        self.verify_result.setWordWrap(True)
        self.export_jsonl = QPushButton("Export JSONL…")
        self.export_cef = QPushButton("Export CEF…")
        self.export_result = QLabel("")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.usage_days = QSpinBox()
        self.usage_days.setRange(1, 365)
        self.usage_days.setValue(14)
        self.usage_by = QComboBox()
        self.usage_by.addItems(["per user", "per team"])
        self.load_usage = QPushButton("Load usage")
        self.chart = UsageChart()

        pager = QHBoxLayout()
        pager.addWidget(self.prev_page)
        pager.addWidget(self.next_page)
        pager.addWidget(self.page_label, 1)
        pager.addWidget(self.verify)
        pager.addWidget(self.export_jsonl)
        pager.addWidget(self.export_cef)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.table, 1)
        left_layout.addLayout(pager)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.detail, 2)
        right_layout.addWidget(self.show_sealed)
        right_layout.addWidget(self.sealed_view, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([700, 380])
        usage_row = QHBoxLayout()
        usage_row.addWidget(QLabel("Usage over the last"))
        usage_row.addWidget(self.usage_days)
        usage_row.addWidget(QLabel("days"))
        usage_row.addWidget(self.usage_by)
        usage_row.addWidget(self.load_usage)
        usage_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(split, 3)
        layout.addWidget(self.verify_result)
        layout.addWidget(self.export_result)
        layout.addWidget(self.status)
        layout.addLayout(usage_row)
        layout.addWidget(self.chart, 1)

        self.search.clicked.connect(self.run_search)
        self.next_page.clicked.connect(self.older)
        self.prev_page.clicked.connect(self.newer)
        self.table.itemSelectionChanged.connect(self._selected)
        self.show_sealed.clicked.connect(self._read_sealed)
        self.verify.clicked.connect(service.verify)
        self.export_jsonl.clicked.connect(lambda: self._ask_export("jsonl"))
        self.export_cef.clicked.connect(lambda: self._ask_export("cef"))
        self.load_usage.clicked.connect(self.refresh_usage)
        service.page.connect(self._page)
        service.verified.connect(self._verified)
        service.exported.connect(self._exported)
        service.sealed.connect(self._sealed)
        service.usage.connect(self._usage)
        service.failed.connect(self._failed)
        self._update_pager()

    def set_access(self, *, read: bool, verify: bool) -> None:
        """Enable what the signed-in role may do; say why the rest is off."""
        self.can_decrypt = read
        for w in (self.actor, self.action, self.outcome, self.use_since, self.since, self.use_until, self.until,
                  self.search, self.table, self.export_jsonl, self.export_cef, self.usage_days, self.usage_by,
                  self.load_usage, self.detail):
            w.setEnabled(read)
        self.verify.setEnabled(verify)
        if not read:
            self.records = []
            self.table.setRowCount(0)
            self.status.setText("Your role can verify the chain; reading, exporting and usage need the auditor role.")
        else:
            self.status.setText("")

    def clear(self) -> None:
        """Forget what the last user saw (records, detail, sealed content, usage, results)."""
        self.records = []
        self._next = None
        self._cursors = [None]
        self.table.setRowCount(0)
        self.detail.clear()
        self.sealed_view.clear()
        self.sealed_view.hide()
        self.show_sealed.setEnabled(False)
        for label in (self.verify_result, self.export_result, self.status):
            label.setText("")
        self.chart.clear()
        self.service.forget()
        self._update_pager()

    # -- querying --------------------------------------------------------------------------------

    def current_query(self) -> AuditQuery:
        return AuditQuery(
            actor=self.actor.text().strip() or None,
            action=self.action.text().strip() or None,
            outcome=self.outcome.currentText() or None,
            since=_utc(self.since) if self.use_since.isChecked() else None,
            until=_utc(self.until) if self.use_until.isChecked() else None,
        )

    def run_search(self) -> None:
        self._query = self.current_query()
        self._cursors = [None]
        self.service.query(self._query, limit=self.page_size)

    def older(self) -> None:
        if self._next is not None:
            self._cursors.append(self._next)
            self.service.query(self._query, cursor=self._next, limit=self.page_size)

    def newer(self) -> None:
        if len(self._cursors) > 1:
            self._cursors.pop()
            self.service.query(self._query, cursor=self._cursors[-1], limit=self.page_size)

    def _page(self, records: list[dict[str, Any]], next_cursor: int | None, query: AuditQuery) -> None:
        if query != self._query:
            return
        self.table.clearSelection()
        self.records = records
        self._next = next_cursor
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            for col, key in enumerate(_COLUMNS):
                self.table.setItem(row, col, QTableWidgetItem(str(record.get(key, ""))))
        self.detail.clear()
        self.sealed_view.hide()
        self.show_sealed.setEnabled(False)
        self.status.setText("" if records else "No events match these filters.")
        self._update_pager()

    def _update_pager(self) -> None:
        self.prev_page.setEnabled(len(self._cursors) > 1)
        self.next_page.setEnabled(self._next is not None)
        self.page_label.setText(f"page {len(self._cursors)}")

    def _selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        record = self.records[rows[0].row()]
        self.detail.setHtml(describe_record(record))
        content = record.get("content") or {}
        self.sealed_view.hide()
        self.show_sealed.setEnabled(self.can_decrypt and content.get("mode") == "sealed" and bool(content.get("ref")))

    def selected_record(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        return self.records[rows[0].row()] if rows else None

    def _read_sealed(self) -> None:
        record = self.selected_record()
        if record and record.get("content"):
            self.service.read_sealed(str(record["content"]["ref"]))

    def _sealed(self, ref: str, fields: dict[str, str]) -> None:
        record = self.selected_record()
        if not record or (record.get("content") or {}).get("ref") != ref:
            return
        self.sealed_view.setPlainText("\n\n".join(f"--- {k} ---\n{v}" for k, v in fields.items()))
        self.sealed_view.show()

    # -- verify / export / usage -----------------------------------------------------------------

    def _verified(self, report: dict[str, Any]) -> None:
        mark = "✔ chain intact" if report.get("ok") else "✘ chain BROKEN"
        self.verify_result.setText(f"{mark}: {report.get('summary', '')}")

    def _ask_export(self, fmt: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export audit log ({fmt})", f"enclave-audit.{fmt}")
        if path:
            self.export_to(path, fmt)

    def export_to(self, path: str, fmt: str) -> None:
        # What is exported is what the filter shows (all pages of it), not the whole log.
        query = self.current_query()
        self.export_result.setText(f"Exporting to {path}…")
        self.service.export(fmt, path, query)

    def _exported(self, path: str, lines: int) -> None:
        scope = "matching the filter" if self.current_query() != AuditQuery() else "(the whole log)"
        self.export_result.setText(f"Exported {lines} records {scope} to {path}")

    def refresh_usage(self) -> None:
        self.service.load_usage(days=self.usage_days.value(), by_team=self.usage_by.currentIndex() == 1, now=self._clock())

    def _usage(self, data: UsageSeries, note: str) -> None:
        last = self._clock().date()
        self.chart.set_usage(data, first=last - dt.timedelta(days=self.usage_days.value() - 1), last=last)
        self.status.setText(note)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.setText(f"{what}: {explain(exc)}")
