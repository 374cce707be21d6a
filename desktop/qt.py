"""The one module that imports PySide6.

Everything else in ``desktop`` imports Qt names from here, so the binding is swappable in one place
and a grep for ``PySide6`` finds exactly one file. Only the names the client uses are re-exported.
"""

from __future__ import annotations

import sys

import PySide6
from PySide6.QtCore import (
    QAbstractTableModel,
    QByteArray,
    QDateTime,
    QEvent,
    QEventLoop,
    QFileSystemWatcher,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QPointF,
    QRect,
    QRectF,
    QRegularExpression,
    QRunnable,
    QSize,
    QSortFilterProxyModel,
    Qt,
    QThreadPool,
    QTimer,
    QTimeZone,
    QtMsgType,
    Signal,
    Slot,
    qInstallMessageHandler,
    qWarning,
)
from PySide6.QtGui import (
    QAction,
    QBrush,
    QCloseEvent,
    QColor,
    QFont,
    QFontDatabase,
    QFontMetrics,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QResizeEvent,
    QStandardItem,
    QStandardItemModel,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFileSystemModel,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QStatusBar,
    QTabBar,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QTextEdit,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

__all__ = [
    "QAbstractItemView",
    "QAbstractTableModel",
    "QAction",
    "QApplication",
    "QBrush",
    "QByteArray",
    "QCheckBox",
    "QCloseEvent",
    "QColor",
    "QComboBox",
    "QDateTime",
    "QDateTimeEdit",
    "QDialog",
    "QDialogButtonBox",
    "QEvent",
    "QEventLoop",
    "QFileDialog",
    "QFileSystemModel",
    "QFileSystemWatcher",
    "QFont",
    "QFontDatabase",
    "QFontMetrics",
    "QFormLayout",
    "QGroupBox",
    "QHBoxLayout",
    "QHeaderView",
    "QKeyEvent",
    "QKeySequence",
    "QLabel",
    "QLineEdit",
    "QListWidget",
    "QListWidgetItem",
    "QMainWindow",
    "QMessageBox",
    "QModelIndex",
    "QObject",
    "QPaintEvent",
    "QPainter",
    "QPalette",
    "QPen",
    "QPersistentModelIndex",
    "QPlainTextEdit",
    "QPoint",
    "QPointF",
    "QProgressBar",
    "QPushButton",
    "QRect",
    "QRectF",
    "QRegularExpression",
    "QResizeEvent",
    "QRunnable",
    "QSize",
    "QSortFilterProxyModel",
    "QSpinBox",
    "QSplitter",
    "QStackedWidget",
    "QStandardItem",
    "QStandardItemModel",
    "QStatusBar",
    "QSyntaxHighlighter",
    "QTabBar",
    "QTabWidget",
    "QTableView",
    "QTableWidget",
    "QTableWidgetItem",
    "QTextBrowser",
    "QTextCharFormat",
    "QTextCursor",
    "QTextDocument",
    "QTextEdit",
    "QThreadPool",
    "QTimeZone",
    "QTimer",
    "QTreeView",
    "QVBoxLayout",
    "QWidget",
    "Qt",
    "QtMsgType",
    "Signal",
    "Slot",
    "binding_problem",
    "qInstallMessageHandler",
    "qWarning",
]


class _Probe(QObject):
    ping = Signal(object)


def binding_problem() -> str | None:
    """Why this PySide6 cannot run the client (None: it can).

    PySide6 6.12.0's ``emit()`` returns ``True`` without taking a reference, so each emit frees one;
    a client streaming answers (one emit a piece) aborts after a few thousand with "Fatal Python
    error: bool_dealloc". Sixteen emits show it, at the cost of sixteen references.
    """
    probe = _Probe()
    probe.ping.connect(lambda _: None)
    before = sys.getrefcount(True)
    for _ in range(16):
        probe.ping.emit(None)
    if before - sys.getrefcount(True) < 8:
        return None
    return (f"PySide6 {PySide6.__version__} loses a reference on every signal emit and would abort the client "
            "mid-answer; install another release: pip install 'PySide6-Essentials!=6.12.0'")
