"""QtLayerTreeModel: the ONE adapter between the core LayerInventory and Qt's item views (and LayerFilter,
the proxy that filters its rows by name, type and bad points).

State lives in the inventory: the checkbox writes `inventory.set_float()`, and the inventory's change
callback comes back here as `dataChanged` for the affected rows (the group, and every ancestor
whose tristate may have changed). After a run, the Local and Accum. columns show each point's error,
and a point worse than the rest carries its diagnosis in its tooltip.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from ..core.quantize.inventory import LayerInfo, LayerInventory

# The toggle and the error sit next to the name: they are what a user scans the tree for.
COLUMNS = ("Layer", "Int8", "Local (dB)", "Accum. (dB)", "Type", "Params", "Output", "Fusion")
COL_NAME, COL_QUANT, COL_LOCAL, COL_SQNR, COL_TYPE, COL_PARAMS, COL_OUTPUT, COL_FUSION = range(len(COLUMNS))
HEADER_TIPS = (
    "Module, functional op (add, cat, …) or model input; a BatchNorm or ReLU folded into a conv follows its "
    "group's head (italic). A point worse than the rest is marked ⚠, its diagnosis in the tooltip",
    "Checked: converted to int8. Unchecked: kept in float (a toggle reconverts without recalibrating)",
    "The point's own error, in dB (higher is better): this point alone in int8 (its weights and its output "
    "rounded to its range) on the float model's values. The first broken point stands out here even when "
    "everything after it is bad too. Colour: red at or below 15 dB, amber at 25 dB, green at or above 35 dB.",
    "Error accumulated up to this point: the int8 model's tensor there against the float model's, in dB "
    "(higher is better). A layer kept float still shows the error that reaches it, marked (float). "
    "A container shows its worst point (min). Colour: red at or below 15 dB, amber at 25 dB, green at or above 35 dB.",
    "Module type in the float model",
    "Parameters of this module and everything under it",
    "Output shape at the model's example input",
    "Modules fused into this layer before quantization (conv + BatchNorm + ReLU run as one int8 op)",
)
NameRole = Qt.ItemDataRole.UserRole + 1
SortRole = Qt.ItemDataRole.UserRole + 2  # what a column sorts by: numbers as numbers, an empty cell last


class QtLayerTreeModel(QAbstractItemModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._inv: LayerInventory | None = None
        self._results: dict = {}
        self._stale = False
        self._overrides: dict = {}
        self._bits: int | None = None  # torchao: the recipe's weight bits (a layer's own in its override)
        self._row_of: dict[str, int] = {}

    # -- binding -----------------------------------------------------------------------------------
    @property
    def inventory(self) -> LayerInventory | None:
        return self._inv

    def set_inventory(self, inventory: LayerInventory | None) -> None:
        self.beginResetModel()
        if self._inv is not None:
            self._inv.unsubscribe(self._on_inventory_changed)
        self._inv, self._results = inventory, {}
        self._row_of = {}
        if inventory is not None:
            for info in inventory:
                for row, child in enumerate(info.children):
                    self._row_of[child] = row
            self._row_of[""] = 0
            inventory.subscribe(self._on_inventory_changed)
        self.endResetModel()

    def set_results(self, layers, stale: bool = False) -> None:
        """Show per-point errors (a list of core PointResult, or empty to clear); `stale`: they are from
        before the latest settings or toggles (shown grey, and said in the tooltip)."""
        self._results = {layer.name: layer for layer in layers or []}
        self._stale = stale
        for column in (COL_NAME, COL_QUANT, COL_LOCAL, COL_SQNR):
            self._emit_column(column)

    def set_overrides(self, overrides: dict, bits: int | None = None) -> None:
        """The recipe's per-point settings ({point: PointOverride}): float16 shows in the Int8 column,
        every setting in the tooltip; `bits`: torchao's weight bits, each quantized layer's shown there."""
        if dict(overrides) == self._overrides and bits == self._bits:
            return
        header = bits != self._bits  # torchao's layers: the column says Bits (4-bit / 8-bit), not Int8
        self._overrides, self._bits = dict(overrides), bits
        if header:
            self.headerDataChanged.emit(Qt.Orientation.Horizontal, COL_QUANT, COL_QUANT)
        self._emit_column(COL_QUANT)
        self._emit_column(COL_NAME)

    @property
    def stale(self) -> bool:
        return self._stale

    def bad_points(self) -> set[str]:
        """Names of the points with a diagnosis (worse than the rest) in the shown result."""
        return {name for name, r in self._results.items() if r.diagnosis}

    def result(self, name: str):
        return self._results.get(name)

    def _on_inventory_changed(self, heads: list[str]) -> None:
        names: set[str] = set()
        for head in heads:
            names.update(self._inv[head].group or [head])
            parent = self._inv[head].parent
            while parent is not None:
                names.add(parent)
                parent = self._inv[parent].parent
        for name in names:
            idx = self.index_of(name, COL_QUANT)
            if idx.isValid():
                self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.CheckStateRole])

    def _emit_column(self, column: int) -> None:
        """One dataChanged per parent, covering all its children's cells in `column`."""
        if self._inv is None:
            return
        roles = [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ToolTipRole,
                 Qt.ItemDataRole.ForegroundRole]
        root = self.index_of("", column)
        self.dataChanged.emit(root, root, roles)
        for info in self._inv:
            if info.children:
                first = self.index_of(info.children[0], column)
                last = self.index_of(info.children[-1], column)
                self.dataChanged.emit(first, last, roles)

    # -- structure ---------------------------------------------------------------------------------
    def _info(self, index: QModelIndex) -> LayerInfo | None:
        return index.internalPointer() if index.isValid() else None

    def index_of(self, name: str, column: int = 0) -> QModelIndex:
        if self._inv is None or name not in self._inv:
            return QModelIndex()
        return self.createIndex(self._row_of[name], column, self._inv[name])

    def index(self, row: int, column: int, parent=QModelIndex()) -> QModelIndex:
        if self._inv is None or not self.hasIndex(row, column, parent):
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, self._inv[""])
        info = self._info(parent)
        return self.createIndex(row, column, self._inv[info.children[row]])

    def parent(self, index=QModelIndex()) -> QModelIndex:
        info = self._info(index)
        if info is None or info.parent is None:
            return QModelIndex()
        return self.index_of(info.parent, 0)

    def rowCount(self, parent=QModelIndex()) -> int:
        if self._inv is None or (parent.isValid() and parent.column() != 0):
            return 0
        return 1 if not parent.isValid() else len(self._info(parent).children)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return "Bits" if section == COL_QUANT and self._bits is not None else COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS[section]
        return None

    # -- data --------------------------------------------------------------------------------------
    def _toggleable(self, info: LayerInfo) -> bool:
        return bool(info.group_head) or bool(self._inv.heads_under(info.name))

    def flags(self, index):
        info = self._info(index)
        if info is None:
            return Qt.ItemFlag.NoItemFlags
        if not self._toggleable(info) and not info.children and info.point is None:
            return Qt.ItemFlag.ItemIsSelectable  # shown disabled; the tooltip says why
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == COL_QUANT and self._toggleable(info):
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        info = self._info(index)
        if info is None:
            return None
        col = index.column()
        if role == NameRole:
            return info.name
        if role == SortRole:
            return self._sort_key(info, col)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(info, col)
        if role == Qt.ItemDataRole.CheckStateRole and col == COL_QUANT and self._toggleable(info):
            state = self._inv.state(info.name)
            return {"quantized": Qt.CheckState.Checked, "float": Qt.CheckState.Unchecked,
                    "partial": Qt.CheckState.PartiallyChecked}[state]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(info)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_PARAMS, COL_SQNR, COL_LOCAL):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and self._stale and col in (COL_SQNR, COL_LOCAL):
            return QBrush(QColor("#9a9a9a"))
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_QUANT:
            return QBrush(QColor("#6b6b6b"))
        if role == Qt.ItemDataRole.BackgroundRole and col in (COL_SQNR, COL_LOCAL) and not self._stale:
            res = self._results.get(info.name)
            value = None if res is None else res.sqnr_db if col == COL_SQNR else res.local_sqnr_db
            if res is not None and res.quantized and value is not None:
                from .plots import sqnr_color

                color = QColor(sqnr_color(value))
                color.setAlpha(110)
                return QBrush(color)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_NAME and info.name in self._results \
                and self._results[info.name].diagnosis:
            return QBrush(QColor("#b03000"))
        if role == Qt.ItemDataRole.FontRole and info.group_head and info.group_head != info.name:
            font = QFont()
            font.setItalic(True)
            return font
        if role == Qt.ItemDataRole.ForegroundRole and info.group_head and info.group_head != info.name:
            return QBrush(QColor("#6b6b6b"))
        return None

    def _display(self, info: LayerInfo, col: int):
        if col == COL_NAME:
            name = info.short_name if info.name else f"(model) {info.type}"
            res = self._results.get(info.name)
            return f"⚠ {name}" if res is not None and res.diagnosis else name
        if col == COL_TYPE:
            return info.type
        override = self._overrides.get(info.name)
        if col == COL_QUANT and override is not None and override.dtype == "float16" \
                and self._inv.state(info.name) == "quantized":
            return "fp16"  # dynamic: float16 weights for this layer
        if col == COL_QUANT and self._bits is not None and self._toggleable(info) \
                and self._inv.state(info.name) == "quantized" and not info.children:
            bits = override.weight_bits if override is not None and override.weight_bits else self._bits
            return f"{bits}-bit"  # torchao: this layer's weights
        if col == COL_QUANT and not self._toggleable(info) and info.name in self._results:
            res = self._results[info.name]  # no checkbox: say what it is in the int8 model
            return "int8" if res.quantized else "float"  # (the tooltip says when the op itself runs in float)
        if col == COL_PARAMS:
            return f"{info.params:,}" if info.params else ""
        if col == COL_OUTPUT:
            return info.output_shape or ""
        if col == COL_SQNR:
            res = self._results.get(info.name)
            if res is None and info.children:  # a container: its worst quantized point
                worst = self._worst_under(info.name)
                return f"min {worst:.1f}" if worst is not None else ""
            if res is None:
                return ""
            if res.sqnr_db is None:
                return "exact" if res.quantized else "–"
            return f"{res.sqnr_db:.1f}" + ("" if res.quantized else " (float)")
        if col == COL_LOCAL:
            res = self._results.get(info.name)
            if res is None and info.children:  # a container: its worst point's own error
                worst = self._worst_under(info.name, local=True)
                return f"min {worst:.1f}" if worst is not None else ""
            if res is None or res.local_sqnr_db is None:
                return "" if res is None or res.quantized else "–"
            return f"{res.local_sqnr_db:.1f}" + ("" if res.quantized else " (if int8)")
        if col == COL_FUSION:
            if info.group and len(info.group) > 1:
                return "fuses " + ", ".join(n.rpartition(".")[2] for n in info.group[1:])
            if info.group_head and info.group_head != info.name:
                return f"→ {info.group_head}"
        return None

    def _sort_key(self, info: LayerInfo, col: int):
        if col == COL_PARAMS:
            return float(info.params or 0)
        if col in (COL_SQNR, COL_LOCAL):
            res = self._results.get(info.name)
            if res is None:
                value = self._worst_under(info.name, local=col == COL_LOCAL) if info.children else None
            else:
                value = res.sqnr_db if col == COL_SQNR else res.local_sqnr_db
            return float("inf") if value is None else float(value)  # exact or no figure: after every number
        return str(self._display(info, col) or "")

    def row_text(self, name: str) -> str:
        """The row of `name` as shown, tab-separated in column order (what Copy row puts on the clipboard)."""
        info = self._inv[name]
        return "\t".join(str(self._display(info, col) or "") for col in range(len(COLUMNS)))

    def _worst_under(self, name: str, local: bool = False) -> float | None:
        prefixes = (f"{name}.", f"{name}/") if name else ("",)
        values = [v for n, r in self._results.items() if n.startswith(prefixes) and r.quantized
                  and (v := r.local_sqnr_db if local else r.sqnr_db) is not None]
        return min(values) if values else None

    def _tooltip(self, info: LayerInfo) -> str:
        lines = [info.name or "(model)", f"{info.type}, {info.params:,} parameters, {info.bytes / 1024:.1f} KiB"]
        note = self._inv.explain(info.name)
        if note:
            lines.append(note)
        elif not self._toggleable(info) and info.reason:
            quantized_point = info.point is not None and info.point.observed
            lines.append(f"{'No float toggle' if quantized_point else 'Not quantizable'}: {info.reason}")
        point = info.point
        if point is not None and info.kind != "module":
            lines[1] = f"{point.description}, called in {info.parent or 'the model'}"
        override = self._overrides.get(info.name)
        if override is not None:
            lines.append("Set for this point (recipe overrides): " + ", ".join(
                f"{k.replace('_', '-')} {v}" for k, v in override.to_dict().items()))
        res = self._results.get(info.name)
        if res is not None and self._stale:
            lines.append("From the last run, made before your latest changes: run again for current figures")
        if res is not None:
            figures = [f"local {res.local_sqnr_db:.1f} dB" if res.local_sqnr_db is not None else None,
                       f"accumulated {res.sqnr_db:.1f} dB" if res.sqnr_db is not None else None,
                       f"normalised error {res.normalised_error:.2f} (rounding alone: 0.29)"
                       if res.normalised_error is not None else None]
            runs = ("int8" if res.runs == "int8" else f"int8 output ({res.type} runs in float)") if res.quantized \
                else f"float ({res.type})"
            if res.quantized and res.runs == "int8":
                runs = f"int8 ({res.type})"
            lines.append(f"{runs}: " + ", ".join(f for f in figures if f))
            if res.range is not None:
                r = res.range
                lines.append(f"{r.range_text()}; clipped {r.clipped_low:.2%} low, {r.clipped_high:.2%} high; "
                             f"{r.levels_text()} used")
            for finding in res.diagnosis:
                lines.append(f"⚠ {finding.text}")
            if res.reason and (not res.quantized or res.kept_float):
                lines.append(res.reason)
        return "\n".join(lines)

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:
        info = self._info(index)
        if info is None or role != Qt.ItemDataRole.CheckStateRole or index.column() != COL_QUANT:
            return False
        checked = Qt.CheckState(value) != Qt.CheckState.Unchecked
        self._inv.set_float(info.name, keep_float=not checked)  # change comes back as dataChanged
        return True


class LayerFilter(QSortFilterProxyModel):
    """Filters by layer name or type, and to the bad points only; keeps the ancestors of every match."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._only: set[str] | None = None

    def set_only(self, names: set[str] | None) -> None:
        """Show only these rows (and their ancestors); None shows every row."""
        if hasattr(self, "beginFilterChange"):  # Qt 6.10+: invalidateFilter() is deprecated there
            self.beginFilterChange()
            self._only = set(names) if names is not None else None
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._only = set(names) if names is not None else None
            self.invalidateFilter()

    def filterAcceptsRow(self, row, parent) -> bool:
        model = self.sourceModel()
        name = model.index(row, COL_NAME, parent).data(NameRole) or ""
        if self._only is not None and name not in self._only:
            return False
        pattern = self.filterRegularExpression().pattern()
        if not pattern:
            return True
        type_name = model.index(row, COL_TYPE, parent).data() or ""
        return pattern.lower() in name.lower() or pattern.lower() in type_name.lower()
