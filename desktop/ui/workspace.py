"""The workspace: file tree, editor, generation panel, proposed edit and history.

Wiring only: every file, index and network operation goes through the services passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from desktop.client.errors import ContextTooLongError
from desktop.project.context import Context, ContextRequest, estimate_tokens
from desktop.project.edits import Conflict, Proposal
from desktop.project.history import HistoryEntry
from desktop.project.index import IndexStats
from desktop.qt import (
    QKeySequence,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStandardItem,
    QStandardItemModel,
    Qt,
    QTabBar,
    QTabWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
    Signal,
)
from desktop.services.connection import Session
from desktop.services.edits import EditService
from desktop.services.generation import (
    CompletionService,
    GenerationService,
    HistoryService,
    build_chat_request,
)
from desktop.services.project import ProjectService
from desktop.ui.dialogs import explain
from desktop.ui.editor import CodeEditor
from desktop.ui.generation_panel import GenerationPanel
from desktop.ui.proposal_view import ProposalView
from shared.errors import AuthError, ThrottledError

__all__ = ["Workspace"]

_PATH_ROLE = Qt.ItemDataRole.UserRole + 1


class Workspace(QWidget):
    errorOccurred = Signal(object)  # exceptions the main window handles (sign-in expired, ...)
    statusMessage = Signal(str)  # a line for the status bar

    def __init__(
        self,
        *,
        project: ProjectService,
        generation: GenerationService,
        completion: CompletionService,
        edits: EditService,
        history: HistoryService,
        completion_pause_ms: int = 600,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.project = project
        self.generation = generation
        self.completion = completion
        self.edits = edits
        self.history = history
        self.session: Session | None = None
        self.context: Context | None = None
        self._context_for = ""  # the question the context was gathered for
        self._context_selection: tuple[int, int] | None = None
        self._context_path = ""  # the file in the editor when the question was asked
        self._request_no = 0
        self._send_after_context = False
        self._proposal_answer = ""
        # Saves run on the project's worker; an edit proposed meanwhile waits for them, since it is
        # made against the file as saved on disk.
        self._saves_in_flight = 0
        self._propose_after_save: str | None = None
        self._question = ""
        self._refitted = False
        # Estimated tokens of context per question; shrinks when the model says a prompt was too
        # long (our four-characters-a-token estimate can be far off for a small tokenizer).
        self.budget = 3000

        self.tree_model = QStandardItemModel(self)
        self.tree = QTreeView()
        self.tree.setModel(self.tree_model)
        self.tree.setHeaderHidden(True)
        self.progress = QProgressBar()
        self.progress.setFormat("Indexing %v/%m")
        self.progress.hide()
        self.index_status = QLabel("Open a project folder to start")
        self.index_status.setWordWrap(True)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.tree, 1)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.index_status)

        self.editor = CodeEditor(pause_ms=completion_pause_ms)
        # One tab per open file; a file left with unsaved edits keeps them here (never silently lost).
        self.buffers: dict[str, str] = {}
        self.file_tabs = QTabBar()
        self.file_tabs.setTabsClosable(True)
        self.file_tabs.setDocumentMode(True)
        self.file_tabs.setExpanding(False)
        self.file_tabs.tabBarClicked.connect(self._tab_clicked)
        self.file_tabs.tabCloseRequested.connect(self.close_tab)
        self.editor.modificationChanged.connect(lambda _: self._mark_tabs())
        # Asked before unsaved edits are dropped: "save", "discard" or "cancel" (tests answer it).
        self.confirm_discard: Callable[[list[str]], str] = self._ask_discard
        editor_box = QWidget()
        editor_layout = QVBoxLayout(editor_box)
        editor_layout.setContentsMargins(0, 0, 0, 0)
        editor_layout.setSpacing(0)
        editor_layout.addWidget(self.file_tabs)
        editor_layout.addWidget(self.editor, 1)
        self.panel = GenerationPanel()
        self.proposal_view = ProposalView()
        self.history_list = QListWidget()
        self.side = QTabWidget()
        self.side.addTab(self.panel, "Generate")
        self.side.addTab(self.proposal_view, "Edit")
        self.side.addTab(self.history_list, "History")

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(editor_box)
        splitter.addWidget(self.side)
        splitter.setSizes([220, 560, 420])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        project.opened.connect(self._opened)
        project.indexProgress.connect(self._progress)
        project.indexed.connect(self._indexed)
        project.pathsChanged.connect(self._paths)
        project.fileLoaded.connect(self._loaded)
        project.contextReady.connect(self._context_ready)
        project.failed.connect(self._project_failed)
        project.fileSaved.connect(self._file_saved)
        self.tree.activated.connect(self._open_index)
        self.tree.clicked.connect(self._open_index)
        self.panel.askRequested.connect(self.gather)
        self.panel.sendRequested.connect(self.send)
        self.panel.stopRequested.connect(generation.cancel)
        self.panel.context_list.removed.connect(self.remove_context_item)
        self.panel.proposeRequested.connect(self.propose)
        generation.started.connect(lambda: self.panel.streaming(True))
        generation.delta.connect(self.panel.append)
        generation.reasoning.connect(self.panel.append_reasoning)
        generation.finished.connect(self._answered)
        generation.failed.connect(self._generation_failed)
        self.editor.completionWanted.connect(self._want_completion)
        self.editor.completionCancelled.connect(completion.cancel)
        completion.completed.connect(self.editor.show_completion)
        completion.failed.connect(self._completion_failed)
        completion.trimmed.connect(lambda limit, window: self.statusMessage.emit(
            f"The model takes {limit} tokens: inline completion now sends ~{window} tokens around the cursor."))
        edits.proposed.connect(self._proposed)
        edits.applied.connect(self._applied)
        edits.undone.connect(lambda p: self._applied(p, undone=True))
        edits.conflict.connect(self._conflict)
        edits.failed.connect(self._error)
        self.proposal_view.applyRequested.connect(edits.apply)
        self.proposal_view.undoRequested.connect(edits.undo)
        self.proposal_view.forceRequested.connect(self._force)
        self.proposal_view.reproposeRequested.connect(
            lambda c: edits.repropose(c, self._target_selection(c.proposal.rel), self._proposal_answer)
        )
        history.loaded.connect(self._history)
        self.history_entries: list[HistoryEntry] = []
        self.history_list.itemActivated.connect(lambda item: self.open_history(self.history_list.row(item)))
        save = self.editor.addAction("Save")
        save.setShortcut(QKeySequence.StandardKey.Save)
        save.triggered.connect(self.save)

    # -- session ---------------------------------------------------------------------------------

    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.editor.completion_enabled = bool(session and session.models)
        if session is not None and self.project.root is not None:
            self._load_history()

    def clear_user_views(self) -> None:
        """Take the account's data off the screen (the next user must not see it): the question and
        answer, the context, the proposed edit, the history. Files and their unsaved edits stay."""
        self.generation.cancel()
        self.completion.cancel()
        self.editor.dismiss()
        self.context = None
        self._context_for = ""
        self._send_after_context = False
        self._proposal_answer = ""
        self.panel.clear()
        self.proposal_view.clear()
        self.history_entries = []
        self.history_list.clear()

    def _load_history(self) -> None:
        if self.session is not None:
            self.history.load(self.project.project_id, user=self.session.username)

    # -- project ---------------------------------------------------------------------------------

    def _opened(self, root: str) -> None:
        self.index_status.setText(f"Indexing {root}…")
        self.progress.setValue(0)
        self.progress.show()
        self._load_history()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)

    def _indexed(self, stats: IndexStats) -> None:
        self.progress.hide()
        count = len(self.project.paths)
        status = f"{count} file indexed" if count == 1 else f"{count} files indexed"
        if stats.indexed or stats.removed:
            status += f" ({stats.indexed} updated, {stats.removed} removed)"
        self.index_status.setText(status)

    def _paths(self, paths: list[str]) -> None:
        self.tree_model.clear()
        dirs: dict[str, QStandardItem] = {}
        root = self.tree_model.invisibleRootItem()
        for path in paths:
            parent = root
            parts = path.split("/")
            for i, part in enumerate(parts[:-1]):
                key = "/".join(parts[: i + 1])
                if key not in dirs:
                    item = QStandardItem(part)
                    item.setEditable(False)
                    parent.appendRow(item)
                    dirs[key] = item
                parent = dirs[key]
            leaf = QStandardItem(parts[-1])
            leaf.setEditable(False)
            leaf.setData(path, _PATH_ROLE)
            parent.appendRow(leaf)

    def _open_index(self, index: Any) -> None:
        path = index.data(_PATH_ROLE)
        if path:
            self.open_file(str(path))

    def open_file(self, rel: str) -> None:
        """Show ``rel`` in the editor; the file being left keeps its unsaved text (its tab shows ●)."""
        if rel == self.editor.path:
            return
        self._stash()
        if rel in self.buffers:
            self._show(rel, self.buffers.pop(rel), modified=True)
            return
        self.project.load(rel)

    def _stash(self) -> None:
        if self.editor.path and self.editor.document().isModified():
            self.buffers[self.editor.path] = self.editor.toPlainText()

    def _show(self, rel: str, text: str, *, modified: bool) -> None:
        self.editor.open_text(rel, text)
        self.editor.document().setModified(modified)
        self._tab_for(rel)
        self._mark_tabs()

    def _loaded(self, rel: str, text: str) -> None:
        if rel in self.buffers:  # an unsaved buffer wins over the file on disk
            self._show(rel, self.buffers.pop(rel), modified=True)
            return
        self._show(rel, text, modified=False)

    def unsaved(self) -> list[str]:
        """Files with edits not yet saved, the one in the editor included."""
        current = [self.editor.path] if self.editor.path and self.editor.document().isModified() else []
        return sorted(set(self.buffers) | set(current))

    def _tab_for(self, rel: str) -> int:
        for i in range(self.file_tabs.count()):
            if self.file_tabs.tabData(i) == rel:
                self.file_tabs.setCurrentIndex(i)
                return i
        i = self.file_tabs.addTab(rel.rsplit("/", 1)[-1])
        self.file_tabs.setTabData(i, rel)
        self.file_tabs.setTabToolTip(i, rel)
        self.file_tabs.setCurrentIndex(i)
        return i

    def _mark_tabs(self) -> None:
        dirty = set(self.unsaved())
        for i in range(self.file_tabs.count()):
            rel = str(self.file_tabs.tabData(i))
            name = rel.rsplit("/", 1)[-1]
            self.file_tabs.setTabText(i, f"● {name}" if rel in dirty else name)

    def _tab_clicked(self, index: int) -> None:
        rel = self.file_tabs.tabData(index)
        if rel and rel != self.editor.path:
            self.open_file(str(rel))

    def close_tab(self, index: int) -> bool:
        """Close a file's tab; unsaved edits are saved or discarded only if the user says so."""
        rel = str(self.file_tabs.tabData(index))
        if rel in self.unsaved():
            choice = self.confirm_discard([rel])
            if choice == "cancel":
                return False
            if choice == "save":
                self.project.save(rel, self.buffers[rel] if rel in self.buffers else self.editor.toPlainText())
        self.buffers.pop(rel, None)
        self.file_tabs.removeTab(index)
        if rel == self.editor.path:
            self.editor.document().setModified(False)
            self.editor.open_text("", "")
            if self.file_tabs.count():
                self._tab_clicked(self.file_tabs.currentIndex())
        return True

    def _ask_discard(self, paths: list[str]) -> str:
        box = QMessageBox(self)
        box.setWindowTitle("Unsaved changes")
        box.setText("Unsaved changes in " + ", ".join(paths) + ".")
        box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                               | QMessageBox.StandardButton.Cancel)
        answer = box.exec()
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            QMessageBox.StandardButton(answer), "cancel")

    def save_all(self) -> None:
        for rel, text in list(self.buffers.items()):
            self._saves_in_flight += 1
            self.project.save(rel, text)
            del self.buffers[rel]
        self.save()

    def save(self) -> None:
        if self.editor.path:
            self._saves_in_flight += 1
            self.project.save(self.editor.path, self.editor.toPlainText())
            self.editor.document().setModified(False)
            self._mark_tabs()

    # -- asking ----------------------------------------------------------------------------------

    def _request(self, question: str) -> ContextRequest:
        e = self.editor
        return ContextRequest(
            question=question,
            current_path=e.path or None,
            current_text=e.toPlainText() if e.path else None,
            cursor_line=e.cursor_line(),
            selection=e.selected_lines(),
            visible=e.visible_lines() if e.path else None,
        )

    def gather(self, question: str) -> None:
        """Assemble the context for ``question`` and show it, without sending anything."""
        self._request_no += 1
        self._context_for = question
        self._context_selection = self.editor.selected_lines()
        self._context_path = self.editor.path
        self.project.assemble(self._request_no, self._request(question), self.budget)

    def _context_ready(self, number: int, context: Context) -> None:
        if number != self._request_no:
            return
        self.context = context
        self.panel.show_context(context)
        if self._send_after_context:
            self._send_after_context = False
            self._send_now(self._context_for)

    def remove_context_item(self, row: int) -> None:
        if self.context is not None and 0 <= row < len(self.context.items):
            self.context = self.context.without(row)
            self.panel.show_context(self.context)

    def send(self, question: str) -> None:
        """Send ``question`` with the context shown (gathering it first if it is missing or stale)."""
        if self.context is None:
            self._send_after_context = True
            self.gather(question)
            return
        # The list shown is the list sent, even if the question was edited after gathering (the user
        # may have removed items from it): "Gather context" again is how to get a new one.
        self._send_now(question)

    def _send_now(self, question: str) -> None:
        if self.session is None or not self.session.models:
            self.panel.show_error("Sign in to an appliance first; your question is kept.")
            return
        assert self.context is not None
        self._question = question
        self._refitted = False
        self.generation.ask(self.session.models[0], question, self.context, self.project.project_id,
                            user=self.session.username, thinking=self.panel.think.isChecked())

    def _answered(self, answer: str, usage: Any) -> None:
        self.panel.finished(usage)
        self._load_history()

    def _generation_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ContextTooLongError) and self._refit(exc):
            return
        self.panel.show_error(explain(exc))
        self.errorOccurred.emit(exc)

    def _refit(self, exc: ContextTooLongError) -> bool:
        """Trim the context to what the model can take and send once more; False if that cannot help."""
        if self._refitted or self.context is None or not exc.limit or not exc.prompt_tokens or self.session is None:
            return False
        room = exc.limit - self.generation.max_tokens - 16
        # How far off our estimate was for the whole prompt (instructions, file headers, question
        # included), then the context budget that makes the whole prompt fit, with a margin.
        request = build_chat_request(self.session.models[0], self._question, self.context, self.project.project_id)
        estimated = sum(estimate_tokens(m.text()) + 4 for m in request.messages)
        ratio = exc.prompt_tokens / max(1, estimated)
        overhead = estimated - self.context.tokens
        budget = int((room / ratio - overhead) * 0.9)
        if budget < 50:
            return False
        self.budget = min(self.budget, budget)
        before = self.context.items
        self.context = self.context.fit(budget)
        dropped = [item.label for item in before if item not in self.context.items]
        self.panel.show_context(self.context)
        self.panel.show_dropped(dropped, f"the model takes {exc.limit} tokens and the prompt had {exc.prompt_tokens}")
        self._refitted = True
        self.panel.status.setText(f"The model takes {exc.limit} tokens: context trimmed to fit, sending again…")
        self.generation.ask(self.session.models[0], self._question, self.context, self.project.project_id,
                            user=self.session.username, thinking=self.panel.think.isChecked())
        return True

    def _file_saved(self, rel: str) -> None:
        self._saves_in_flight = max(0, self._saves_in_flight - 1)
        if not self._saves_in_flight and self._propose_after_save is not None:
            answer, self._propose_after_save = self._propose_after_save, None
            self.propose(answer)

    def _project_failed(self, what: str, exc: BaseException) -> None:
        if what == "context":
            self._send_after_context = False  # nothing to send with; the question stays in its box
        if what == "save":
            self._saves_in_flight, self._propose_after_save = 0, None  # the edit waits on a file not written
        self._error(exc)

    def _error(self, exc: BaseException) -> None:
        self.panel.status.setText(explain(exc))
        self.errorOccurred.emit(exc)

    def _history(self, entries: list[HistoryEntry]) -> None:
        user = self.session.username if self.session else None
        if any(e.user != user for e in entries):
            return  # asked for before a sign-out or a user switch: not this user's
        self.history_entries = entries
        self.history_list.clear()
        for e in entries:
            item = QListWidgetItem(f"{e.at:%Y-%m-%d %H:%M} · {e.question[:80]} · {len(e.context)} context items")
            item.setToolTip("Double-click (or Enter) to open this question and its answer")
            self.history_list.addItem(item)

    def open_history(self, row: int) -> None:
        """Show a past question and its answer in the generation panel (it can be proposed as an edit again)."""
        if not 0 <= row < len(self.history_entries):
            return
        entry = self.history_entries[row]
        self.context = None  # the list shown is the old one; Send gathers a fresh one for the question
        self._context_path = self.editor.path
        self._context_selection = None
        self.panel.show_history(entry)
        self.side.setCurrentWidget(self.panel)

    # -- completion ------------------------------------------------------------------------------

    def _want_completion(self, number: int, prefix: str, suffix: str) -> None:
        if self.session is not None and self.session.models:
            model = self.session.models[0]
            self.completion.request(number, model, prefix, suffix, context_length=self.session.context_lengths.get(model))

    def _completion_failed(self, number: int, exc: BaseException) -> None:
        # Never a silent blank: the reason goes to the status bar, where the user is looking.
        self.statusMessage.emit(f"Inline completion failed: {explain(exc)}")
        if isinstance(exc, AuthError) and not isinstance(exc, ThrottledError):
            self.errorOccurred.emit(exc)

    # -- edits -----------------------------------------------------------------------------------

    def propose(self, answer: str) -> None:
        """Turn the answer's code into an edit of the file it was asked about (its selected lines, if
        any), against that file as saved on disk."""
        root = self.project.root
        rel = self._context_path or self.editor.path
        if root is None or not rel:
            self.panel.status.setText("Open the file to change in the editor first.")
            return
        if rel in self.unsaved():
            self.panel.status.setText(f"Save {rel} first: the edit is made to the file as saved, and the "
                                      "diff shows exactly what will be written.")
            return
        if self._saves_in_flight:
            self._propose_after_save = answer
            return
        self._proposal_answer = answer
        self.edits.propose(root, rel, self._target_selection(rel), answer)

    def _target_selection(self, rel: str) -> tuple[int, int] | None:
        return self._context_selection if rel == (self._context_path or rel) else None

    def _proposed(self, proposal: Proposal) -> None:
        self.proposal_view.show_proposal(proposal)
        self.side.setCurrentWidget(self.proposal_view)

    def _applied(self, proposal: Proposal, *, undone: bool = False) -> None:
        self.proposal_view.show_applied(proposal, undone=undone)
        self.proposal_view.set_can_undo(self.edits.can_undo)
        self.project.touched(proposal.rel)
        if self.editor.path == proposal.rel and not self.editor.document().isModified():
            self.editor.open_text(proposal.rel, proposal.after)
        self.project.refresh()

    def _conflict(self, conflict: Conflict) -> None:
        self.proposal_view.show_conflict(conflict)
        self.side.setCurrentWidget(self.proposal_view)

    def _force(self, conflict: Conflict) -> None:
        if conflict.undoing:
            self.edits.undo(force=True)
        else:
            self.edits.apply(conflict.proposal, force=True)
