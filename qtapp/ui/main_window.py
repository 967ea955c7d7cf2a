"""The main window: open a model, toggle layers, calibrate in the background, see where it hurt.

Every action goes through the core QuantSession and its recipe; torch work runs in JobRunner's
worker thread, and results are applied here on the GUI thread.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ..core.base.errors import QtappError
from ..core.report import render
from ..core.run import jobs
from ..core.run.session import QuantSession
from ..core.tune.search import TuneResult
from .controller import RunController
from .dialogs import error_box
from .file_actions import FileActionsMixin
from .graph_actions import GraphActionsMixin
from .history_actions import HistoryActionsMixin
from .layer_model import (
    COL_FUSION,
    COL_LOCAL,
    COL_OUTPUT,
    COL_PARAMS,
    COL_QUANT,
    COL_SQNR,
    COL_TYPE,
    LayerFilter,
    QtLayerTreeModel,
    SortRole,
)
from .log_panel import LogPanel
from .messages import for_window, point_at_control
from .plots import OutputErrorPlot, WeightHistogramPlot
from .point_plot import LayerErrorPlot
from .range_plot import ActivationRangePlot
from .settings_panel import SettingsPanel
from .summary import SummaryView
from .tree_actions import TreeActionsMixin
from .tune_panel import TunePanel
from .tune_plot import SensitivityPlot, TradeoffPlot
from .verdict_banner import VerdictBanner
from .workers import JobRunner

log = logging.getLogger("qtapp.ui")


def _column_widths(width: int, settings_width: int) -> list[int]:
    """Tree, plots, settings: the settings column as narrow as its controls allow; the plots as wide as
    their tabs need (480 px), then the tree up to all its columns (740 px), then the plots again."""
    settings = max(settings_width, 320)
    rest = max(width - settings - 12, 600)
    plots = max(min(480, rest - 360), rest - 740)
    return [rest - plots, plots, settings]


class MainWindow(FileActionsMixin, GraphActionsMixin, HistoryActionsMixin, TreeActionsMixin, QMainWindow):
    session_changed = Signal()
    result_applied = Signal()  # a new quantization result is on screen (size/latency follow)
    job_failed = Signal(str)

    def __init__(self, settings: QSettings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.session: QuantSession | None = None
        self.runner = JobRunner(self)
        self.runner.busy_changed.connect(self._on_runner_busy_changed)
        self.controller = RunController(self.runner, self._on_job_progress,
                                        lambda name, exc, details: self._show_error(f"{name} failed", exc, details), self)
        self.setWindowTitle("Quantization Studio")
        self.setAcceptDrops(True)
        self._build_widgets()
        self._build_menus()
        self._restore_settings()
        self._update_actions()

    # -- construction ---------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.tree_model = QtLayerTreeModel(self)
        self.proxy = LayerFilter(self)
        self.proxy.setSourceModel(self.tree_model)
        self.tree = QTreeView()
        self.tree.setModel(self.proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._on_tree_context_menu)
        self.tree.selectionModel().currentChanged.connect(self._on_tree_current_changed)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        # Columns sort on a click (numbers as numbers, a third click restores the model's order).
        self.proxy.setSortRole(SortRole)
        self.tree.header().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.tree.header().setSortIndicatorClearable(True)
        self.tree.setSortingEnabled(True)
        self.tree.header().setSortIndicatorShown(False)  # its arrow takes room: shown only while sorted
        self.tree.header().sortIndicatorChanged.connect(
            lambda section, _order: self.tree.header().setSortIndicatorShown(section >= 0))
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter layers by name or type…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._on_filter_changed)
        self.bad_only = QCheckBox("Only bad points")
        self.bad_only.setToolTip("Show only the quantization points worse than the rest (marked ⚠), each with "
                                 "its diagnosis in its tooltip")
        self.bad_only.toggled.connect(self._on_bad_only_toggled)
        self.tree_hint = QLabel("Open a model: File ▸ Open demo (Ctrl+D), a torchvision model, a factory, "
                                "a model file, or drop a file here.")
        self.tree_hint.setWordWrap(True)
        self.tree_hint.setStyleSheet("color: #666; padding: 6px;")
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(4, 4, 0, 4)
        filters = QHBoxLayout()
        filters.addWidget(self.filter_edit, 1)
        filters.addWidget(self.bad_only)
        lv.addLayout(filters)
        lv.addWidget(self.tree_hint)
        lv.addWidget(self.tree, 1)

        self.layer_plot = LayerErrorPlot()
        self.layer_plot.layer_clicked.connect(self._on_layer_plot_clicked)
        self.weight_plot = WeightHistogramPlot()
        self.range_plot = ActivationRangePlot()
        self.output_plot = OutputErrorPlot()
        self.sensitivity_plot = SensitivityPlot()
        self.sensitivity_plot.layer_clicked.connect(self._on_layer_plot_clicked)
        self.tradeoff_plot = TradeoffPlot()
        self.tradeoff_plot.step_clicked.connect(self._on_tradeoff_step)
        self.summary = SummaryView()
        self.verdict_banner = VerdictBanner()
        self.verdict_banner.repair_requested.connect(self._on_repair_requested)
        self.detail_tabs = QTabWidget()
        self.detail_tabs.addTab(self.weight_plot, "Weights")
        self.detail_tabs.addTab(self.range_plot, "Activation range")
        self.detail_tabs.addTab(self.output_plot, "Output error")
        self.detail_tabs.addTab(self.sensitivity_plot, "Sensitivity")
        self.detail_tabs.addTab(self.tradeoff_plot, "Trade-off")
        self.detail_tabs.setTabToolTip(0, "The selected layer's float and int8 weights, and per-channel ranges")
        self.detail_tabs.setTabToolTip(1, "The selected point's values against its int8 range and levels")
        self.detail_tabs.setTabToolTip(3, "Each toggleable point measured both ways (Tune panel ▸ Sensitivity)")
        self.detail_tabs.setTabToolTip(4, "Every configuration the last tune tried, score against size; click one "
                                          "to apply it")
        self.plots = QSplitter(Qt.Orientation.Vertical)
        self.plots.addWidget(self.layer_plot)
        self.plots.addWidget(self.detail_tabs)
        self.plots.setSizes([400, 460])

        self.settings_panel = SettingsPanel()
        self.settings_panel.changed.connect(self._on_settings_changed)
        self.run_button = QPushButton("Calibrate && quantize")
        self.run_button.setToolTip("Calibrate, convert, compare and measure (Ctrl+R)")
        self.run_button.clicked.connect(self.run_quantize)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job at the next batch (Esc)")
        self.cancel_button.clicked.connect(self.cancel_job)
        self.tune_panel = TunePanel()
        self.tune_panel.tune_requested.connect(self.run_tune)
        self.tune_panel.sensitivity_requested.connect(self.run_sensitivity)
        self.tune_panel.metric_changed.connect(self._on_metric_changed)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)  # shown while a job runs
        self.progress_label = QLabel("Idle")
        self.progress_label.setWordWrap(True)
        self.progress_label.setStyleSheet("color: #444;")
        # The settings column: what a user sets once scrolls (settings and the Tune panel); what a run
        # shows stays in view at any window size (Run/Cancel, progress, the summary) in a pane below it.
        settings = QWidget()
        sv = QVBoxLayout(settings)
        sv.setContentsMargins(0, 4, 4, 4)
        sv.addWidget(self.settings_panel)
        sv.addWidget(self.tune_panel)
        sv.addStretch(1)
        settings_scroll = QScrollArea()
        settings_scroll.setWidgetResizable(True)
        settings_scroll.setFrameShape(QFrame.Shape.NoFrame)
        settings_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        settings_scroll.setWidget(settings)
        settings_scroll.setMinimumWidth(settings.minimumSizeHint().width() + 16)
        status = QWidget()
        stv = QVBoxLayout(status)
        stv.setContentsMargins(0, 4, 4, 4)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        stv.addLayout(buttons)
        stv.addWidget(self.progress)
        stv.addWidget(self.progress_label)
        summary_box = QGroupBox("Summary")
        summary_scroll = QScrollArea()  # many notes scroll inside the summary, not the whole column
        summary_scroll.setWidgetResizable(True)
        summary_scroll.setFrameShape(QFrame.Shape.NoFrame)
        summary_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        summary_scroll.setWidget(self.summary)
        sbv = QVBoxLayout(summary_box)
        sbv.setContentsMargins(4, 4, 4, 4)
        sbv.addWidget(summary_scroll)
        stv.addWidget(summary_box, 1)
        self.right_column = QSplitter(Qt.Orientation.Vertical)
        self.right_column.addWidget(settings_scroll)
        self.right_column.addWidget(status)
        self.right_column.setChildrenCollapsible(False)
        self.right_column.setStretchFactor(0, 1)
        self.right_column.setStretchFactor(1, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.plots)
        self.splitter.addWidget(self.right_column)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        # The verdict spans the window above everything: seen at any size (the summary may be below the fold).
        central = QWidget()
        cv = QVBoxLayout(central)
        cv.setContentsMargins(4, 4, 4, 0)
        cv.setSpacing(4)
        cv.addWidget(self.verdict_banner)
        cv.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        self.log_panel = LogPanel()
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.log_dock.hide()
        self._build_runs_dock()
        self.tabifyDockWidget(self.log_dock, self.runs_dock)
        self.statusBar().showMessage("Ready")

    def _action(self, menu: QMenu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._action(file_menu, "Open model file…", self._on_open_file, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open from torchvision…", self._on_open_torchvision, "Ctrl+T")
        self._action(file_menu, "Open Python factory…", self._on_open_factory, "Ctrl+Shift+F")
        self._action(file_menu, "Open demo", lambda: self.open_spec("demo"), "Ctrl+D")
        self._action(file_menu, "Open recipe…", self._on_open_recipe, "Ctrl+Shift+O")
        self.save_recipe_action = self._action(file_menu, "Save recipe…", self._on_save_recipe, QKeySequence.StandardKey.Save)
        self.recent_menu = file_menu.addMenu("Recent files")
        file_menu.addSeparator()
        self.export_action = self._action(file_menu, "Export…", self.open_export_dialog, "Ctrl+Shift+E")
        self.save_report_action = self._action(file_menu, "Save report…", self._on_save_report)
        self.save_points_action = self._action(file_menu, "Save point table (CSV)…", self._on_save_points)
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)
        self._build_edit_menu()
        run_menu = self.menuBar().addMenu("&Run")
        self.run_action = self._action(run_menu, "Calibrate && quantize", self.run_quantize, "Ctrl+R")
        self.tune_action = self._action(run_menu, "Tune", self.tune_panel.tune_button.click, "Ctrl+Shift+T")
        self.sensitivity_action = self._action(run_menu, "Sensitivity", self.run_sensitivity, "Ctrl+Shift+S")
        self.cancel_action = self._action(run_menu, "Cancel", self.cancel_job, "Esc")
        view_menu = self.menuBar().addMenu("&View")
        toggle_log = self.log_dock.toggleViewAction()
        toggle_log.setShortcut(QKeySequence("Ctrl+L"))
        view_menu.addAction(toggle_log)
        self._add_compare_action(view_menu)
        self._action(view_menu, "Expand all layers", self.tree.expandAll)
        self._action(view_menu, "Collapse all layers", self.tree.collapseAll)
        self.show_graph_action = self._action(view_menu, "Show on graph (Model Explorer)", self._on_show_on_graph, "Ctrl+G")
        self.show_graph_action.setToolTip("Each point's error on the float model's graph (torch.export), in Model "
                                          "Explorer, the worst point reddest")
        for title, plot in (("per-point error", self.layer_plot), ("weight histogram", self.weight_plot),
                            ("activation range", self.range_plot), ("output error", self.output_plot)):
            self._action(view_menu, f"Export {title} plot as PNG…", lambda _=False, p=plot, t=title: self._on_export_plot(p, t))
        self._rebuild_recent_menu()

    # -- settings persistence -------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1480, 900)
        state = self.settings.value("window/splitter")
        self._columns_placed = state is not None and self.splitter.restoreState(state)
        column = self.settings.value("window/right_column")
        self._right_placed = column is not None and self.right_column.restoreState(column)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        # First start: the columns shared out by the window's real size (1280x720 to 1920x1080 and up)
        if not self._columns_placed:
            self._columns_placed = True
            self.splitter.setSizes(_column_widths(self.width(), self.right_column.minimumSizeHint().width()))
        if not self._right_placed:
            self._right_placed = True
            height = self.right_column.height() or self.height() - 60
            status = max(260, min(height * 9 // 20, 400))  # the summary's table and its first notes
            self.right_column.setSizes([height - status, status])

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.settings.setValue("window/right_column", self.right_column.saveState())
        self.settings.sync()

    # -- session --------------------------------------------------------------------------------------
    def set_session(self, session: QuantSession) -> None:
        self.session = session
        self.tree_model.set_inventory(session.inventory)
        session.inventory.subscribe(self._on_inventory_changed)
        self.runs_panel.show_runs(session.runs)
        self._update_history_actions()
        self.tree_hint.setVisible(False)
        self.tree.expandToDepth(1)
        for col, width in enumerate((150, 40, 66, 80)):
            self.tree.setColumnWidth(col, width)
        # Counts and shapes whole (the tree scrolls sideways before it cuts a number); a long type name
        # is elided, its tooltip whole.
        for col, widest in ((COL_TYPE, 160), (COL_PARAMS, 200), (COL_OUTPUT, 260), (COL_FUSION, 260)):
            self.tree.resizeColumnToContents(col)
            self.tree.setColumnWidth(col, min(self.tree.columnWidth(col), widest))
        self.settings_panel.show_recipe(session.recipe)
        self.tune_panel.show_metric(session.recipe.metric)
        self.sensitivity_plot.set_sensitivity(None)
        self.tradeoff_plot.set_tune(None)
        self._show_result()
        inv = session.inventory
        self.setWindowTitle(f"{session.recipe.model} — Quantization Studio")
        msg = f"Loaded {session.recipe.model}: {len(inv.heads)} quantizable layers, input {session.input_spec or 'unknown'}"
        self.statusBar().showMessage(msg)
        log.info(msg)
        for note in [*session.notes, *inv.notes]:
            log.info("note: %s", note)
        self._update_actions()
        self.session_changed.emit()

    # -- jobs ---------------------------------------------------------------------------------------------
    def _start(self, name, make_job, on_result, on_error=None, on_finished=None, on_cancel=None):
        return self.controller.submit(name, make_job, on_result, on_error,
                                      on_cancel or (lambda *_: self.statusBar().showMessage(f"{name} cancelled")),
                                      on_finished)

    def run_quantize(self) -> None:
        """Calibrate (unless the stored calibration still fits), convert, compare and measure: one job
        on a snapshot taken now; a job already running is cancelled and this one runs next."""
        if self.session is None:
            return
        session, snap = self.session, self.session.snapshot()

        def on_result(outcome) -> None:
            if self.session is not session:
                return  # another model was opened meanwhile
            previous = session.calibrated
            session.adopt(outcome)
            self._add_run("reconvert" if previous is not None and outcome.calibrated is previous else "quantize")
            self._show_result()
            if self.selected_layer() is None:  # point at the layer that hurts most
                worst = render.worst_layers(outcome.result, 1)
                if worst:
                    self.select_layer(worst[0].name)
            self.result_applied.emit()
            self.statusBar().showMessage("Quantized and measured", 5000)

        def on_cancel(partial=None) -> None:
            kept = partial is not None and self.session is session
            if kept:  # the calibration had finished: the next run only converts
                session.adopt_calibration(partial)
            self._show_result()
            self.statusBar().showMessage("quantize cancelled" + ("; its calibration is kept, the next run only "
                                                                 "converts" if kept else ""))

        self.controller.submit("quantize", lambda cancel: jobs.quantize(snap, cancel), on_result,
                               on_cancel=on_cancel)

    def run_sensitivity(self) -> None:
        """Quantize (from the stored calibration when it fits), then every toggleable point both ways."""
        if self.session is None:
            return
        session, snap = self.session, self.session.snapshot()

        def on_result(outcome) -> None:
            if self.session is not session:
                return
            result = session.adopt(outcome)
            self._add_run("sensitivity")
            self._show_result()
            self.sensitivity_plot.set_sensitivity(result.sensitivity)
            self.detail_tabs.setCurrentWidget(self.sensitivity_plot)
            self.result_applied.emit()
            top = result.sensitivity.points[0].name if result.sensitivity.points else None
            self.statusBar().showMessage(f"Sensitivity of {len(result.sensitivity.points)} points"
                                         + (f": keeping {top} float gains most" if top else ""), 8000)

        self._start("sensitivity", lambda cancel: jobs.sensitivity(snap, cancel), on_result)

    def run_tune(self, target, budget) -> None:
        """Search for the configuration that reaches `target` within `budget`; it is applied to the tree
        and its curve shown in the Trade-off tab."""
        if self.session is None:
            return
        session, snap = self.session, self.session.snapshot()

        def on_result(outcome) -> None:
            if self.session is not session:
                return
            session.adopt_tuned(outcome)
            self._add_run("tune")
            self._record_edit()
            self.settings_panel.show_recipe(session.recipe)
            self._show_result()
            self.tradeoff_plot.set_tune(outcome.tune)
            self.detail_tabs.setCurrentWidget(self.tradeoff_plot)
            self.result_applied.emit()
            t = outcome.tune
            floats = len(t.best.config.float_points)
            eight = len(t.best.config.eight_bit)
            self.statusBar().showMessage(f"Tune {'reached' if t.reached else 'did NOT reach'} {t.target}: "
                                         f"{t.best.score:.4g} with {floats} point(s) float"
                                         + (f", {eight} layer(s) at 8 bits" if eight else ""), 10000)

        def on_cancel(partial=None) -> None:
            tried = partial if isinstance(partial, TuneResult) and self.session is session else None
            if tried is not None:  # what was tried stays in view, marked as a cancelled search
                self.tradeoff_plot.set_tune(tried)
                self.detail_tabs.setCurrentWidget(self.tradeoff_plot)
            self.statusBar().showMessage("tune cancelled" + (
                f" after {len(tried.steps)} configuration(s): the Trade-off tab shows them; nothing was applied"
                if tried is not None else ": nothing was applied"))

        self._start("tune", lambda cancel: jobs.tune(snap, target, budget, cancel), on_result, on_cancel=on_cancel)

    def _on_repair_requested(self, target, budget) -> None:
        """The verdict's Repair: tune with its target and budget, shown in the Tune panel as if typed."""
        self.tune_panel.target_edit.setText(str(target))
        self.tune_panel.budget_edit.setText(str(budget))
        self.run_tune(target, budget)

    def _on_tradeoff_step(self, step: int) -> None:
        """Apply a configuration the last tune tried to the tree (its float points and per-point settings)."""
        tune, session = self.tradeoff_plot.tune(), self.session
        if tune is None or session is None:
            return
        config = tune.steps[step].scored.config
        self._apply_configuration(config.float_points, config.override_map, config.equalize)
        self._record_edit()
        self.statusBar().showMessage(f"Applied: {tune.steps[step].move}", 6000)

    def _on_metric_changed(self, name) -> None:
        session = self.session
        if session is None:
            return
        try:
            session.set_metric(name)
        except Exception as exc:  # noqa: BLE001 - the user's function failed to import: said, metric unchanged
            self.tune_panel.show_metric(session.recipe.metric)
            self._show_error("Cannot use this metric", exc)
            return
        log.info("metric: %s", name or "sqnr")
        if session.result is not None and session.calibrated is not None:
            self.run_quantize()  # the figures are re-scored with it

    def cancel_job(self) -> None:
        self.controller.cancel()

    def _on_job_progress(self, p) -> None:
        if p.total:
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
            self.progress.setFormat(f"{p.stage}: {p.done}/{p.total}")
        else:
            self.progress.setRange(0, 0)
        eta = f" · ~{p.eta_s:.0f} s left" if p.eta_s is not None and p.done < p.total else ""
        self.progress_label.setText(f"{p.stage}: {p.message}{eta}")

    def _on_runner_busy_changed(self, busy: bool) -> None:
        runner = self.runner
        if busy:  # until the job's first record: said, with a moving bar (converting a large model takes seconds)
            self.progress.setRange(0, 0)
            self.progress.setVisible(True)
            self.progress_label.setText(f"{runner.name}: starting…")
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
            self.progress.setVisible(False)  # an empty bar reads as work waiting
            self.progress_label.setText(f"{runner.name} {runner.ended or 'stopped'} after {runner.seconds:.1f} s"
                                        if runner.name else "Idle")
        self._update_actions()

    def _update_actions(self) -> None:
        busy, loaded = self.runner.busy, self.session is not None
        why_not = self.session.loaded.why_not_quantizable() if loaded else None
        runnable = loaded and why_not is None
        self.run_button.setEnabled(runnable and not busy)
        self.run_action.setEnabled(runnable and not busy)
        self.run_button.setToolTip(why_not or "Calibrate, convert, compare and measure (Ctrl+R)")
        self.cancel_button.setEnabled(busy)
        self.cancel_action.setEnabled(busy)
        self.settings_panel.setEnabled(loaded and not busy)
        for widget in (self.tune_panel.tune_button, self.tune_panel.sensitivity_button, self.tune_action,
                       self.sensitivity_action, self.verdict_banner.repair_button):
            widget.setEnabled(runnable and not busy)
        self.save_recipe_action.setEnabled(loaded)
        self.export_action.setEnabled(loaded and not busy and self.session.result is not None)
        self.save_report_action.setEnabled(loaded and self.session.result is not None)
        self.save_points_action.setEnabled(loaded and self.session.result is not None)
        self.show_graph_action.setEnabled(loaded and not busy and self.session.result is not None)

    def _show_error(self, title: str, exc, details: str = "") -> None:
        log.error("%s: %s", title, exc)
        text = for_window(str(exc))
        if isinstance(exc, QtappError):
            text = point_at_control(text, self.session.recipe if self.session is not None else None)
        self.statusBar().showMessage(f"{title}: {text.splitlines()[0]}", 10000)
        self.job_failed.emit(text)
        box = error_box(self, title, exc, details,
                        text=text if isinstance(exc, QtappError) else None)
        box.open()

    # -- results --------------------------------------------------------------------------------------
    def _show_result(self) -> None:
        session = self.session
        result = session.result if session is not None else None
        # Per-layer figures of a result made with another method or mode name other layers: not shown.
        layers = result.layers if result is not None and result.mode == session.mode else []
        # A result from before a settings change or a toggle still being applied: shown, greyed, and said.
        stale = bool(layers) and not session.result_is_current()
        self.tree_model.set_results(layers, stale=stale)
        self.tree_model.set_overrides(session.recipe.overrides if session is not None else {},
                                      session.recipe.weight_bits if session is not None and session.mode == "torchao"
                                      else None)
        self.layer_plot.set_results(layers, stale=stale)
        self.layer_plot.set_low_bit(session is not None and session.mode == "torchao")
        self.bad_only.setEnabled(bool(layers))
        self._apply_bad_only()
        if layers:  # the figures' columns as wide as their text ("34.8 (if int8)"), within reason
            for col, widest in ((COL_QUANT, 48 if result.mode != "torchao" else 80), (COL_LOCAL, 120),
                                (COL_SQNR, 120)):  # torchao: a check box and "4-bit"
                self.tree.resizeColumnToContents(col)
                self.tree.setColumnWidth(col, min(self.tree.columnWidth(col), widest))
        self.output_plot.set_metrics(result.output if result else None,
                                     stale=result is not None and not session.result_is_current())
        self.summary.show_result(session)
        self.verdict_banner.show_result(result, stale=session is not None and session.calibrated is None)
        self._on_tree_current_changed(self.tree.currentIndex(), None)
        self._update_actions()

    def _on_inventory_changed(self, heads) -> None:
        session = self.session
        log.info("float layers: %s", ", ".join(session.inventory.float_layers) or "none")
        self.statusBar().showMessage(f"{len(session.inventory.float_layers)} layer(s) kept float", 4000)
        self._record_edit()
        if session.calibrated is not None and not session.result_is_current():  # reconvert at once
            self.run_quantize()

    # -- settings -------------------------------------------------------------------------------------
    def _on_settings_changed(self, changes: dict, configuration: tuple | None = None) -> None:
        """Apply settings changed in the panel (or by an undo, with the `configuration` of float points,
        overrides and equalisation to set with them)."""
        session = self.session
        if session is None:
            return

        def prepare(cancel):
            return session.prepare_recipe_change(**changes)  # may re-trace the model: not on the GUI thread
            yield  # noqa: unreachable - makes this a job generator

        def on_result(change) -> None:
            if self.session is not session:
                return
            if session.apply_recipe_change(change):
                self.set_session(session)
            if configuration is not None:
                session.apply_configuration(*configuration)
            self.settings_panel.show_recipe(session.recipe)
            self._record_edit()
            self._show_result()
            if session.result is not None and session.calibrated is None:
                self.statusBar().showMessage("Settings changed: run again to recalibrate", 5000)
            elif session.result is not None and not session.result_is_current():
                self.run_quantize()  # a conversion setting (the activation range): reconvert at once

        def on_error(exc, details) -> None:
            self.settings_panel.show_recipe(session.recipe)
            self._show_error("Invalid setting", exc, details)

        self.controller.submit("apply settings", prepare, on_result, on_error)

    # -- tree and plots -------------------------------------------------------------------------------
    # -- close -------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.runner.busy:
            log.info("closing during %s: cancelling", self.runner.name)
        self.runner.shutdown()
        self.stop_model_explorer()
        self._save_settings()
        self.log_panel.detach()
        super().closeEvent(event)


