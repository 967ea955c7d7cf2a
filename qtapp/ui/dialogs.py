"""Dialogs: errors with details, pickle trust consent, torchvision and factory openers, export."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.base.errors import QtappError
from ..core.deploy.export import FORMATS


def error_box(parent: QWidget, title: str, exc: BaseException, details: str = "", text: str | None = None) -> QMessageBox:
    """A plain message for the user (`text`, else the error's own in the window's words); the traceback
    behind 'Show Details…'. Not yet shown."""
    from .messages import for_window

    if text is None:
        text = for_window(str(exc)) if isinstance(exc, QtappError) else f"{type(exc).__name__}: {exc}"
    box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
    box.setObjectName("errorDialog")
    return box


def _consent_box(parent: QWidget, title: str, text: str, accept: str, name: str) -> QMessageBox:
    """A warning whose default is Cancel; only its `accept` button (AcceptRole) consents."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Cancel, parent)
    box.addButton(accept, QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setObjectName(name)
    return box


def trust_box(parent: QWidget, path, classes: list[str]) -> QMessageBox:
    return _consent_box(parent, "Load untrusted pickle?",
                        f"{path} needs classes outside the safe allowlist (torch.nn and torchvision models):\n\n"
                        + "\n".join(f"  • {c}" for c in sorted(classes))
                        + "\n\nLoading it will EXECUTE CODE from the file. Only continue if you trust its source.",
                        "Load and run its code", "trustDialog")


def program_consent_box(parent: QWidget, path, kind: str = "TorchScript") -> QMessageBox:
    return _consent_box(parent, f"Load {kind} file?",
                        f"{path}\nis a {kind} file. TorchScript is a program: loading it runs code stored in the "
                        "file (it can create or overwrite any file you can write).\n\nOnly continue if you trust "
                        "its source.", "Load and run its code", "programConsentDialog")


def code_consent_box(parent: QWidget, spec: str, source, role: str = "model") -> QMessageBox:
    return _consent_box(parent, "Run code named by a recipe?",
                        f"The recipe\n  {source}\nnames this Python callable as its {role}:\n  {spec}\n\n"
                        "Opening it will IMPORT AND RUN that code. A recipe is a data file that may come from "
                        "anyone: only continue if you trust it.", "Run it and open", "codeConsentDialog")


class TorchvisionDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open from torchvision")
        import torchvision.models as tvm
        import torchvision.models.quantization as tvq

        self.name = QComboBox()
        self.name.setEditable(True)
        self.name.addItems(sorted(tvm.list_models(module=tvm)) + sorted(tvm.list_models(module=tvq)))
        self.name.setCurrentText("resnet18")
        self.weights = QComboBox()
        self.weights.setEditable(True)
        self.weights.addItems(["none", "DEFAULT"])
        form = QFormLayout(self)
        form.addRow("Model", self.name)
        form.addRow("Weights", self.weights)
        hint = QLabel("quantized_* models use eager mode (fused, QuantStubs); the others use FX graph mode.\n"
                      "DEFAULT downloads pretrained weights (needs a network); or type a state_dict path.")
        hint.setStyleSheet("color: #555;")
        form.addRow(hint)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def spec(self) -> tuple[str, str]:
        return f"torchvision:{self.name.currentText().strip()}", self.weights.currentText().strip()


class FactoryDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open Python factory")
        self.target = QLineEdit()
        self.target.setPlaceholderText("package.module:build_model  or  path/to/file.py:build_model")
        self.kwargs = QLineEdit("{}")
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("optional state_dict (.pt/.pth), loaded with weights_only=True")
        self.input_shape = QLineEdit()
        self.input_shape.setPlaceholderText("e.g. 1,3,224,224 (needed unless the model declares it)")
        pick_file = QPushButton("File…")
        pick_file.clicked.connect(self._on_pick_file_clicked)
        pick_weights = QPushButton("File…")
        pick_weights.clicked.connect(self._on_pick_weights_clicked)
        form = QFormLayout(self)
        form.addRow("Factory", _row(self.target, pick_file))
        form.addRow("kwargs (JSON)", self.kwargs)
        form.addRow("Weights", _row(self.weights, pick_weights))
        form.addRow("Input shape", self.input_shape)
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020;")
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._on_accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.setMinimumWidth(560)

    def _on_pick_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Python file", "", "Python (*.py)")
        if path:
            self.target.setText(f"{path}:")

    def _on_pick_weights_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "state_dict", "", "PyTorch (*.pt *.pth)")
        if path:
            self.weights.setText(path)

    def _on_accept(self) -> None:
        try:
            self.values()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.accept()

    def values(self) -> dict:
        target = self.target.text().strip()
        if ":" not in target or target.endswith(":"):
            raise ValueError("give module:callable or file.py:callable")
        try:
            kwargs = json.loads(self.kwargs.text() or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise ValueError("kwargs must be a JSON object")
        return {"model": target, "kwargs": kwargs, "weights": self.weights.text().strip() or None,
                "input_shape": self.input_shape.text().strip() or None}


def _row(*widgets) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        lay.addWidget(x)
    return w


def _grid(widgets, columns: int) -> QWidget:
    """`widgets` in rows of `columns`: five format boxes in one row made the dialog wider than an 800 px screen."""
    w = QWidget()
    lay = QGridLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    for i, x in enumerate(widgets):
        lay.addWidget(x, i // columns, i % columns)
    return w


# SQNR: the file's own output, run in its runtime, against float; ms: batch 1, against a float file of the
# same format in the same runtime
COLUMNS = ("Format", "File", "Size", "Verified", "SQNR vs float", "Float ms", "Int8 ms", "Speed-up", "Quantized by",
           "Notes")
NOTES_WIDTH = 260  # the least the notes column keeps: a sentence wraps to a few lines
FORMAT_LABELS = {"pt": "TorchScript (.pt)", "ptl": "Lite interpreter (.ptl, mobile)", "onnx": "ONNX (.onnx)",
                 "pte": "ExecuTorch (.pte, mobile)", "pt2": "torch.export (.pt2)"}  # a box for each of FORMATS


class ExportDialog(QDialog):
    """Choose a folder and formats; the main window runs the export job and fills in the results."""

    def __init__(self, parent=None, folder: str = "", unavailable: dict | None = None) -> None:
        """`unavailable`: format -> why it cannot be exported for this model (shown, not tickable)."""
        super().__init__(parent)
        self.setWindowTitle("Export quantized model")
        self.folder = QLineEdit(folder)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        self.formats = {f: QCheckBox(FORMAT_LABELS.get(f, f".{f}")) for f in FORMATS}
        unavailable = unavailable or {}
        defaults = [f for f in ("pt", "ptl") if f not in unavailable] or [f for f in ("pte", "onnx") if f not in unavailable]
        for fmt in defaults:
            self.formats[fmt].setChecked(True)
        self.time_files = QCheckBox("time each file against float in its runtime")
        self.time_files.setChecked(True)
        self.time_files.setToolTip("Each file and a float file of the same format run in a separate process, batch 1")
        for fmt, why in unavailable.items():
            self.formats[fmt].setChecked(False)
            self.formats[fmt].setEnabled(False)
            self.formats[fmt].setToolTip(why)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(True)  # notes are sentences: wrap them rather than cut them
        self.table.horizontalHeader().sectionResized.connect(  # and again when the dialog is resized
            lambda col, _old, _new: col == len(COLUMNS) - 1 and self.table.resizeRowsToContents())
        self.table.setVisible(False)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setEnabled(False)
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        form = QFormLayout()
        form.addRow("Folder", _row(self.folder, browse))
        form.addRow("Formats", _grid(self.formats.values(), columns=3))
        form.addRow("", self.time_files)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        note = QLabel("Each file is loaded back and run; the report and recipe are saved beside them.")
        note.setStyleSheet("color: #555;")
        layout.addWidget(note)
        layout.addWidget(self.progress)
        layout.addWidget(self.table)
        layout.addLayout(_hbox(self.open_folder_button, self.export_button, close))
        self.resize(760, 260)

    def _on_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export folder", self.folder.text())
        if path:
            self.folder.setText(path)

    def chosen_formats(self) -> list[str]:
        return [f for f, box in self.formats.items() if box.isChecked()]

    def show_results(self, results) -> None:
        self.table.setVisible(True)
        self.table.setRowCount(len(results))
        for row, r in enumerate(results):
            lat = r.latency
            cells = [r.format, r.path, f"{r.bytes / 1e6:.2f} MB", "yes" if r.verified else "NO",
                     "" if r.sqnr_vs_float_db is None else f"{r.sqnr_vs_float_db:.1f} dB",
                     f"{lat.float_ms:.3f}" if lat else "", f"{lat.quantized_ms:.3f}" if lat else "",
                     f"{lat.float_ms / lat.quantized_ms:.2f}x" if lat else "", r.quantizer, "; ".join(r.notes)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        for col in (1, len(COLUMNS) - 2):
            self.table.setColumnWidth(col, min(self.table.columnWidth(col), 220))
        self.open_folder_button.setEnabled(bool(results))
        # Wide enough for the notes beside the figures, never past the main window (nor the screen): the
        # notes column takes what is left and wraps its sentences.
        figures = sum(self.table.columnWidth(c) for c in range(len(COLUMNS) - 1))
        width = min(max(self.width(), figures + NOTES_WIDTH + 60), self._room().width())
        self.resize(width, self.height())
        self.layout().activate()
        short = figures + NOTES_WIDTH - self.table.viewport().width()
        if short > 0:  # tight room: the path gives way (its tooltip holds it whole), not the notes
            self.table.setColumnWidth(1, max(self.table.columnWidth(1) - short, 80))
        self.table.resizeRowsToContents()
        height = 220 + self.table.horizontalHeader().height() + self.table.verticalHeader().length()
        self.resize(width, min(max(self.height(), height), self._room().height()))

    def _room(self):
        """The room the dialog may take: its main window's (within the screen's)."""
        screen = self.screen().availableGeometry()
        parent = self.parentWidget()
        if parent is None:
            return screen.size()
        return parent.window().size().boundedTo(screen.size())

    def _on_open_folder_clicked(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        QDesktopServices.openUrl(QUrl.fromLocalFile(self.folder.text()))


def _hbox(*widgets):
    lay = QHBoxLayout()
    lay.addStretch(1)
    for w in widgets:
        lay.addWidget(w)
    return lay
