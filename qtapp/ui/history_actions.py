"""The main window's session memory: the Runs dock (every run kept, two compared) and Edit > Undo/Redo
over settings and float choices. Mixed into MainWindow; the runs and the edit states are the session's
(`core.run.history`), and an undone state is applied through the same session calls as a user's edit."""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget

from .runs_panel import RunsPanel

log = logging.getLogger("qtapp.ui")


class HistoryActionsMixin:
    def _build_runs_dock(self) -> None:
        self.runs_panel = RunsPanel()
        self.runs_dock = QDockWidget("Runs", self)
        self.runs_dock.setObjectName("runsDock")
        self.runs_dock.setWidget(self.runs_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.runs_dock)
        self.runs_dock.hide()
        self.runs_dock.visibilityChanged.connect(self._on_runs_dock_shown)

    def _on_runs_dock_shown(self, visible: bool) -> None:
        if visible and not self.runs_dock.isFloating():  # room for the bars, the window's plots kept in view
            self.resizeDocks([self.runs_dock], [max(220, min(320, self.height() * 2 // 5))], Qt.Orientation.Vertical)

    def _build_edit_menu(self) -> None:
        menu = self.menuBar().addMenu("&Edit")
        # The standard keys: while a text field has focus, Ctrl+Z undoes the typing there (the field takes
        # the key first), as in every editor; elsewhere it undoes the last toggle or setting.
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Undo))
        self.undo_action.triggered.connect(self.undo_edit)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(self.redo_edit)
        menu.addAction(self.undo_action)
        menu.addAction(self.redo_action)
        self._update_history_actions()

    def _add_compare_action(self, menu) -> None:
        self.compare_action = self.runs_dock.toggleViewAction()
        self.compare_action.setText("Compare runs")
        self.compare_action.setShortcut(QKeySequence("Ctrl+Shift+C"))
        self.compare_action.setToolTip("Every run of this session; two side by side")
        menu.addAction(self.compare_action)

    # -- runs ---------------------------------------------------------------------------------------
    def _add_run(self, action: str) -> None:
        """Keep the session's current result in its Runs list (after it was adopted)."""
        session = self.session
        if session is None or session.result is None:
            return
        record = session.runs.add(session.result, action)
        log.info("run kept: %s", record.label)
        self.runs_panel.show_runs(session.runs)

    # -- undo / redo ----------------------------------------------------------------------------------
    def _record_edit(self) -> None:
        """Remember the session's settings and float choices after an edit (nothing when unchanged)."""
        if self.session is not None:
            self.session.edits.record(self.session.recipe)
        self._update_history_actions()

    def _update_history_actions(self) -> None:
        edits = self.session.edits if self.session is not None else None
        for action, can, text, verb in ((self.undo_action, edits and edits.can_undo, edits and edits.undo_text(), "Undo"),
                                        (self.redo_action, edits and edits.can_redo, edits and edits.redo_text(), "Redo")):
            action.setEnabled(bool(can))
            action.setText(f"{verb} {text}" if can else verb)

    def undo_edit(self) -> None:
        if self.session is not None and self.session.edits.can_undo:
            now, target = self.session.edits.undo()
            self._go_to_state(now, target, "Undone")

    def redo_edit(self) -> None:
        if self.session is not None and self.session.edits.can_redo:
            now, target = self.session.edits.redo()
            self._go_to_state(now, target, "Redone")

    def _go_to_state(self, now, target, verb: str) -> None:
        """Put the session in `target`'s settings and float choices, the way a user's edit does."""
        self.statusBar().showMessage(f"{verb}: {target.describe(now) if verb == 'Redone' else now.describe(target)}",
                                     5000)
        changes = now.settings_changes(target)
        if changes:  # a settings change may rebuild the inventory: the same job as the settings panel's
            self._on_settings_changed(changes, configuration=target.configuration())
        else:
            self._apply_configuration(*target.configuration())
        self._update_history_actions()

    def _apply_configuration(self, float_layers, overrides, equalize) -> None:
        session = self.session
        session.apply_configuration(float_layers, overrides, equalize)  # a float-set change reconverts
        self.settings_panel.show_recipe(session.recipe)
        self._show_result()
        if session.calibrated is not None and not session.result_is_current() and not self.runner.busy:
            self.run_quantize()  # only per-point settings changed: no inventory change started a run
