"""The main window's View > Show on graph: the current result's figures on the float model's graph, in
Model Explorer. A mixin of MainWindow: the graph job (core run.graphing: torch.export, then the node data)
runs on the window's worker thread; Model Explorer then runs as a separate process (QProcess: the window
never waits for it), or, when it is not installed, a dialog says how to get it and where the files are."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from PySide6.QtCore import QProcess, Qt
from PySide6.QtWidgets import QMessageBox

from ..core.base.errors import UsageError
from ..core.run.graphing import INSTALL, GraphFiles, graph_request, model_explorer_command, write_graph

log = logging.getLogger("qtapp.ui")
LOG_FILE = "model-explorer.log"


class GraphActionsMixin:
    model_explorer: QProcess | None = None  # the Model Explorer this window started last (it ends with the window)
    graph_files: GraphFiles | None = None  # what the last Show on graph wrote

    def _on_show_on_graph(self) -> None:
        # A folder of its own each time: Model Explorer reads the files while it runs, after this returns.
        self.show_on_graph(Path(tempfile.mkdtemp(prefix="qtapp-graph-")))

    def show_on_graph(self, folder: Path) -> None:
        """Write graph.pt2 and the node data of the current result into `folder` (a job), then open them."""
        session = self.session
        if session is None or session.result is None:
            self.statusBar().showMessage("Quantize first: there is nothing to show on the graph yet", 5000)
            return
        try:
            request = graph_request(session, folder)  # the result and the model, taken now
        except UsageError as exc:
            self._show_error("Cannot show on graph", exc)
            return
        self.statusBar().showMessage("Exporting the float model's graph (torch.export)…")
        self.controller.submit("graph", lambda cancel: write_graph(request, cancel), self._on_graph_written,
                               on_error=lambda exc, details: self._show_error("Show on graph failed", exc, details))

    def _on_graph_written(self, files: GraphFiles) -> None:
        self.graph_files = files
        if not files.written:
            self._graph_box("No graph for this model", f"{files.why_not}.\n\nThe run's figures are in the layer "
                                                        "tree and File ▸ Save point table.")
            return
        command = model_explorer_command(files)
        if command is None:
            self._graph_box("Model Explorer is not installed",
                            f"Model Explorer shows the run's error on the model's graph. Install it with\n\n"
                            f"    {INSTALL}\n\nthen use View ▸ Show on graph again. The files were written to\n"
                            f"{files.folder}\n({', '.join(files.written)}): open them with\n\n"
                            f"    model-explorer {' '.join(files.model_explorer_args())}")
            return
        self._start_model_explorer(files, command)

    def _start_model_explorer(self, files: GraphFiles, command: list[str]) -> None:
        previous = self.model_explorer
        if previous is not None and previous.state() != QProcess.ProcessState.NotRunning:
            previous.kill()  # one graph open at a time: the new one replaces it
        process = QProcess(self)
        process.setWorkingDirectory(str(files.folder))  # holds only our files
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.setStandardOutputFile(str(files.folder / LOG_FILE))
        process.errorOccurred.connect(lambda error, p=process: self._on_model_explorer_error(p, error, files))
        process.finished.connect(lambda code, _status, p=process: self._on_model_explorer_finished(p, code, files))
        self.model_explorer = process
        process.start(command[0], command[1:])
        log.info("started Model Explorer: %s", " ".join(command))
        self.statusBar().showMessage(f"Model Explorer is starting and opens in your browser: {files.summary()} "
                                     f"(files in {files.folder})", 15000)

    def stop_model_explorer(self) -> None:
        """Stop the Model Explorer this window started (on close: its page reads the window's files)."""
        process, self.model_explorer = self.model_explorer, None
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            return
        process.finished.disconnect()
        process.errorOccurred.disconnect()
        process.terminate()
        if not process.waitForFinished(3000):
            process.kill()
            process.waitForFinished(3000)

    def _on_model_explorer_error(self, process: QProcess, error, files: GraphFiles) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._graph_box("Model Explorer did not start", f"{process.errorString()}.\n\nThe files are in "
                                                            f"{files.folder}.")

    def _on_model_explorer_finished(self, process: QProcess, code: int, files: GraphFiles) -> None:
        if process is self.model_explorer and code != 0:
            self.statusBar().showMessage(f"Model Explorer stopped (exit {code}): see {files.folder / LOG_FILE}", 15000)
        process.deleteLater()
        if process is self.model_explorer:
            self.model_explorer = None

    def _graph_box(self, title: str, text: str) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, self)
        box.setObjectName("graphDialog")
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        return box
