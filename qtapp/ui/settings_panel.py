"""The settings panel: method, engine, observer, data and QAT settings, over the session's recipe.

Widgets show the recipe; user edits are emitted as `changed({field: value})` and applied to the core
session by the main window. `show_recipe()` refreshes the widgets without emitting anything.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.config.recipe import (
    BACKENDS,
    DTYPES,
    ENGINES,
    METHODS,
    OBSERVERS,
    ONNX_QUANTIZERS,
    STATIC_MODES,
    QuantRecipe,
)
from ..core.data.open import SPECIAL_SOURCES, TENSOR_SUFFIXES

ENGINE_NOTES = {
    "fbgemm": "fbgemm: x86 server/desktop kernels.",
    "x86": "x86: fbgemm + oneDNN, the default for x86 CPUs.",
    "qnnpack": "qnnpack targets Arm phones: on this x86 machine it runs slower than float, "
               "and its latency here says nothing about a phone.",
    "onednn": "onednn: Intel oneDNN kernels.",
}
SOURCES = (("auto", "Model's own data (demo) / random"), ("demo", "Demo data"),
           ("random", "Random tensors (unrepresentative)"), ("folder", "Image folder…"), ("file", "Tensor file…"))


class SettingsPanel(QWidget):
    changed = Signal(dict)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._updating = False
        self._greyed: set[str] = set()  # the recipe fields whose greyed control shows what applies instead
        self.method = self._combo(METHODS)
        self.backend = self._combo(BACKENDS)
        self.backend.setToolTip("torch.ao: FX/eager/dynamic quantization, ships .pt/.ptl/.onnx. pt2e: torchao's PT2E "
                                "with the XNNPACK quantizer (static, QAT), ships ExecuTorch .pte and ONNX")
        self.onnx_quantizer = self._combo(ONNX_QUANTIZERS)
        self.onnx_quantizer.setToolTip("Who makes the int8 .onnx: torch (the torch.ao model exported) or ort "
                                       "(ONNX Runtime's quantize_static of the float model, same data and float layers)")
        self.static_mode = self._combo(STATIC_MODES)
        self.engine = self._combo(ENGINES)
        self.engine_note = QLabel()
        self.engine_note.setWordWrap(True)
        self.engine_note.setStyleSheet("color: #555; font-size: 11px;")
        self.observer = self._combo(OBSERVERS)
        self.per_channel = QCheckBox("per-channel weight scales")
        self.equalize = QCheckBox("cross-layer equalisation")
        self.equalize.setToolTip("Before calibrating, even out the weight ranges of each pair of layers joined by "
                                 "nothing but a ReLU (the float model computes the same; recalibrates). Helps where "
                                 "one channel's weights or activations are far out of line with the others")
        self.equalize_depthwise = QCheckBox("even out depthwise conv inputs")
        self.equalize_depthwise.setObjectName("equalize_depthwise")
        self.equalize_depthwise.setToolTip(
            "On the calibration data, scale the quiet input channels of each depthwise conv up towards the loudest "
            "(the layer before carries the factor, the depthwise weights the inverse), so one int8 range serves "
            "them all. Needs per-channel weight scales")
        self.dtype = self._combo(DTYPES)
        self.weight_bits = self._combo(("8", "4"))
        self.weight_bits.setToolTip("torchao: the weights' bits for every Linear and Embedding layer (a layer's own "
                                    "bits, from a recipe or a tune, are in its tree row's tooltip)")
        self.group_size = self._combo(("32", "64", "128", "256"))
        self.group_size.setToolTip("torchao, 4-bit weights: weights per scale along a row (8-bit weights have one "
                                   "scale per output channel)")
        self.source = QComboBox()
        for key, label in SOURCES:
            self.source.addItem(label, key)
        self.source_path = QLineEdit()
        self.source_path.setReadOnly(True)
        self.source_path.setPlaceholderText("no file chosen")
        self.browse = QPushButton("Browse…")
        self.batches = self._spin(1, 100000)
        self.batch_size = self._spin(1, 4096)
        self.epochs = self._spin(1, 1000)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)

        quant = QGroupBox("Quantization")
        form = QFormLayout(quant)
        form.addRow("Method", self.method)
        form.addRow("Backend", self.backend)
        form.addRow("Static mode", self.static_mode)
        form.addRow("Engine", self.engine)
        form.addRow("", self.engine_note)
        form.addRow("Observer", self.observer)
        form.addRow("", self.per_channel)
        form.addRow("", self.equalize)
        form.addRow("", self.equalize_depthwise)
        form.addRow("Dynamic dtype", self.dtype)
        form.addRow("Weight bits", self.weight_bits)
        form.addRow("Group size", self.group_size)
        self._torchao_rows = (self.weight_bits, self.group_size)
        self._form = form
        form.addRow("ONNX quantizer", self.onnx_quantizer)
        data = QGroupBox("Calibration data")
        dform = QFormLayout(data)
        dform.addRow("Source", self.source)
        row = QHBoxLayout()
        row.addWidget(self.source_path)
        row.addWidget(self.browse)
        dform.addRow("Path", row)
        dform.addRow("Batches", self.batches)
        dform.addRow("Batch size", self.batch_size)
        qat = QGroupBox("Quantization-aware training")
        qform = QFormLayout(qat)
        qform.addRow("Epochs", self.epochs)
        qform.addRow("Learning rate", self.lr)
        self.qat_box = qat
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (quant, data, qat):
            layout.addWidget(box)

        self.method.currentTextChanged.connect(self._on_method_changed)
        self.backend.currentTextChanged.connect(self._on_backend_changed)
        self.weight_bits.currentTextChanged.connect(lambda v: self._emit(weight_bits=int(v)))
        self.group_size.currentTextChanged.connect(lambda v: self._emit(group_size=int(v)))
        self.onnx_quantizer.currentTextChanged.connect(lambda v: self._emit(onnx_quantizer=v))
        self.static_mode.currentTextChanged.connect(lambda v: self._emit(static_mode=v))
        self.engine.currentTextChanged.connect(lambda v: self._emit(engine=v))
        self.observer.currentTextChanged.connect(lambda v: self._emit(observer=v))
        self.per_channel.toggled.connect(lambda v: self._emit(per_channel=v))
        self.equalize.toggled.connect(lambda v: self._emit(equalize=v))
        self.equalize_depthwise.toggled.connect(lambda v: self._emit(equalize_depthwise=v))
        self.dtype.currentTextChanged.connect(lambda v: (self._emit(dtype=v), self._update_enabled()))
        self.source.currentIndexChanged.connect(self._on_source_changed)
        self.browse.clicked.connect(self._on_browse_clicked)
        self.batches.valueChanged.connect(lambda v: self._emit_data(batches=v))
        self.batch_size.valueChanged.connect(lambda v: self._emit_data(batch_size=v))
        self.epochs.valueChanged.connect(lambda v: self._emit_qat(epochs=v))
        self.lr.valueChanged.connect(lambda v: self._emit_qat(lr=v))
        self._recipe: QuantRecipe | None = None
        self.show_recipe(QuantRecipe(model="demo"))  # show the defaults until a model is open
        self.show_recipe(None)

    @staticmethod
    def _combo(items) -> QComboBox:
        box = QComboBox()
        box.addItems(list(items))
        return box

    @staticmethod
    def _spin(lo: int, hi: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(lo, hi)
        return spin

    # -- recipe -> widgets ---------------------------------------------------------------------------
    def show_recipe(self, recipe: QuantRecipe | None) -> None:
        self._recipe = recipe
        self.setEnabled(recipe is not None)
        if recipe is None:
            return  # the widgets keep showing the last values, disabled
        self._updating = True
        self._greyed.clear()  # every control shows the recipe's value, then _update_enabled greys what does not apply
        try:
            self.method.setCurrentText(recipe.method)
            self.backend.setCurrentText(recipe.backend)
            self.onnx_quantizer.setCurrentText(recipe.onnx_quantizer)
            self.static_mode.setCurrentText(recipe.static_mode)
            self.engine.setCurrentText(recipe.engine)
            self.observer.setCurrentText(recipe.observer)
            self.per_channel.setChecked(recipe.per_channel)
            self.equalize.setChecked(recipe.equalize)
            self.equalize_depthwise.setChecked(recipe.equalize_depthwise)
            self.dtype.setCurrentText(recipe.dtype)
            self.weight_bits.setCurrentText(str(recipe.weight_bits))
            self.group_size.setCurrentText(str(recipe.group_size or 32))
            src = recipe.calibration.source
            key = src if src in SPECIAL_SOURCES else (
                "file" if Path(src).suffix.lower() in TENSOR_SUFFIXES else "folder")
            self.source.setCurrentIndex(self.source.findData(key))
            self.source_path.setText("" if key in SPECIAL_SOURCES else src)
            self.batches.setValue(recipe.calibration.batches)
            self.batch_size.setValue(recipe.calibration.batch_size)
            self.epochs.setValue(recipe.qat.epochs)
            self.lr.setValue(recipe.qat.lr)
        finally:
            self._updating = False
        self._update_enabled()

    def _update_enabled(self) -> None:
        method = self.method.currentText()
        torchao = self.backend.currentText() == "torchao"
        # torchao quantizes weights alone (int8 activations per call, or none): like dynamic quantization, no
        # graph mode, engine, observer, equalisation or torch.ao dtype applies
        dynamic = method in ("dynamic", "weight-only")
        # A greyed control shows the value that applies to the method chosen, not the recipe's (which it
        # keeps, and shows again once the control is live): static and QAT quantization make int8 whatever
        # the dynamic dtype.
        self._show_applied("dtype", dynamic and not torchao, None if torchao else "qint8")
        self.dtype.setEnabled(dynamic and not torchao)
        pt2e = self.backend.currentText() == "pt2e" and not dynamic
        float16 = dynamic and not torchao and self.dtype.currentText() == "float16"
        # Blank where nothing of the kind applies: dynamic quantization has no graph mode and no observer
        # (each call's own range), PT2E no torch.ao engine (it quantizes for XNNPACK).
        self._show_applied("static_mode", method == "static" and not pt2e,
                           "fx" if method == "qat" and not pt2e else None)
        self._show_applied("engine", not pt2e and not torchao, None)
        # QAT's ranges are its fake quantizers' moving averages; PT2E's, the XNNPACK quantizer's histogram
        self._show_applied("observer", method == "static" and not pt2e,
                           "moving-average" if method == "qat" else "histogram" if pt2e else None)
        # dynamic int8 weights take it too (per-channel scales for each Linear); float16 weights have no scales,
        # torchao's take Weight bits and Group size instead
        self._show_applied("per_channel", not float16 and not torchao, False)
        self._show_applied("equalize", not dynamic, False)
        self._show_applied("equalize_depthwise", not dynamic and self.per_channel.isChecked(), False)
        self._show_applied("onnx_quantizer", not torchao, None)
        self.static_mode.setEnabled(method == "static" and not pt2e)
        self.engine.setEnabled(not pt2e and not torchao)
        self.observer.setEnabled(method == "static" and not pt2e)
        self.per_channel.setEnabled(not float16 and not torchao)
        self.onnx_quantizer.setEnabled(not torchao)
        self.equalize.setEnabled(not dynamic)
        self.equalize_depthwise.setEnabled(not dynamic and self.per_channel.isChecked())
        torchao = self.backend.currentText() == "torchao"
        for w in self._torchao_rows:  # torchao's own settings, shown with it
            self._form.setRowVisible(w, torchao)
        self.group_size.setEnabled(torchao and self.weight_bits.currentText() == "4")
        self.qat_box.setEnabled(method == "qat")
        self.qat_box.setVisible(method == "qat")  # its room goes to the rest at 1280x720; back with QAT
        key = self.source.currentData()
        self.browse.setEnabled(key in ("folder", "file"))
        self.engine_note.setText("pt2e quantizes for XNNPACK (ExecuTorch)." if pt2e
                                 else "torchao's weights run on XNNPACK (ExecuTorch .pte)." if torchao
                                 else ENGINE_NOTES.get(self.engine.currentText(), ""))
        self.engine_note.setStyleSheet("color: #a04000; font-size: 11px;" if self.engine.currentText() == "qnnpack"
                                       and not pt2e and not torchao
                                       else "color: #555; font-size: 11px;")

    def _show_applied(self, field: str, applies: bool, value) -> None:
        """Where the recipe's `field` does not apply, its control shows `value`, what does (None: nothing,
        shown blank); where it applies again, the recipe's own value. Display only: nothing is emitted and
        the recipe keeps its value."""
        widget = getattr(self, field)
        if applies:
            if field not in self._greyed or self._recipe is None:
                return
            self._greyed.discard(field)
            value = getattr(self._recipe, field)
        else:
            self._greyed.add(field)
        widget.blockSignals(True)
        try:
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif value is None:
                widget.setCurrentIndex(-1)
            else:
                widget.setCurrentText(value)
        finally:
            widget.blockSignals(False)

    # -- widgets -> changes ------------------------------------------------------------------------
    def _on_method_changed(self, method: str) -> None:
        # weight-only is torchao's, and torchao makes no static or QAT model: the other setting follows
        backend = self.backend.currentText()
        if method == "weight-only" and backend != "torchao":
            self._set_quietly(self.backend, "torchao")
            self._emit(method=method, backend="torchao")
        elif method in ("static", "qat") and backend == "torchao":
            self._set_quietly(self.backend, "torch.ao")
            self._emit(method=method, backend="torch.ao")
        else:
            self._emit(method=method)

    def _on_backend_changed(self, backend: str) -> None:
        method = self.method.currentText()
        if backend == "torchao" and method in ("static", "qat"):
            self._set_quietly(self.method, "dynamic")
            self._emit(backend=backend, method="dynamic")
        elif backend != "torchao" and method == "weight-only":
            self._set_quietly(self.method, "dynamic")
            self._emit(backend=backend, method="dynamic")
        else:
            self._emit(backend=backend)

    def _set_quietly(self, combo, text: str) -> None:
        combo.blockSignals(True)
        combo.setCurrentText(text)
        combo.blockSignals(False)

    def _emit(self, **changes) -> None:
        self._update_enabled()
        if not self._updating and self._recipe is not None:
            self.changed.emit(changes)

    def _emit_data(self, **changes) -> None:
        if self._recipe is not None:
            self._emit(calibration=replace(self._recipe.calibration, **changes))

    def _emit_qat(self, **changes) -> None:
        if self._recipe is not None:
            self._emit(qat=replace(self._recipe.qat, **changes))

    def set_calibration_source(self, source: str) -> None:
        """Choose a source programmatically (also used after the file dialog)."""
        if self._recipe is None:
            return
        self._emit(calibration=replace(self._recipe.calibration, source=source))

    def _on_source_changed(self, _index: int) -> None:
        key = self.source.currentData()
        self._update_enabled()
        if self._updating:
            return
        if key in SPECIAL_SOURCES:
            self.source_path.clear()
            self.set_calibration_source(key)
        elif not self.source_path.text():
            self._on_browse_clicked()

    def _on_browse_clicked(self) -> None:
        if self.source.currentData() == "folder":
            path = QFileDialog.getExistingDirectory(self, "Calibration image folder")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Calibration tensor file", "",
                                                  "Tensors (*.npy *.npz *.pt *.pth)")
        if path:
            self.source_path.setText(path)
            self.set_calibration_source(path)
