"""The layer tree's side of the main window: filtering, the bad-points view, selection (which drives the
weight and range tabs) and the context menu. A mixin of MainWindow, kept apart so the window's module
stays readable; it uses the window's session, tree, proxy, tree model and plots."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QMenu

from .layer_model import COL_NAME, NameRole


class TreeActionsMixin:
    def _on_filter_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        if text:
            self.tree.expandAll()

    def _on_bad_only_toggled(self, checked: bool) -> None:
        self._apply_bad_only()
        if checked:
            self.tree.expandAll()

    def _apply_bad_only(self) -> None:
        """Only the bad points (and their ancestors), and a line saying so when there is none."""
        checked = self.bad_only.isChecked() and self.bad_only.isEnabled()
        bad = self.tree_model.bad_points()
        self.proxy.set_only(bad if checked else None)
        self.tree_hint.setVisible(self.session is None or (checked and not bad))
        if self.session is not None and checked and not bad:
            self.tree_hint.setText("No point is worse than the rest in this result: every point is shown again "
                                   "when you untick Only bad points.")

    def selected_layer(self) -> str | None:
        idx = self.tree.currentIndex()
        return self.proxy.mapToSource(idx).data(NameRole) if idx.isValid() else None

    def select_layer(self, name: str) -> None:
        src = self.tree_model.index_of(name, COL_NAME)
        idx = self.proxy.mapFromSource(src)
        if idx.isValid():
            self.tree.setCurrentIndex(idx)
            self.tree.scrollTo(idx)

    def _on_tree_current_changed(self, current, _previous) -> None:
        name = self.proxy.mapToSource(current).data(NameRole) if current.isValid() else None
        inv = self.session.inventory if self.session else None
        if name is not None and inv is not None and inv[name].group_head:
            name = inv[name].group_head
        layer = self.tree_model.result(name) if name is not None else None
        self.weight_plot.set_layer(name, layer.weight if layer else None)
        is_point = name is not None and inv is not None and inv[name].point is not None
        self.range_plot.set_point(name, layer, is_point=is_point, ran=self.session is not None and
                                  self.session.result is not None)
        self.layer_plot.highlight(name if layer else None)
        # When the open tab has nothing to show for this point and the other one has, show that one.
        current = self.detail_tabs.currentWidget()
        if current is self.weight_plot and self.weight_plot.is_empty() and not self.range_plot.is_empty():
            self.detail_tabs.setCurrentWidget(self.range_plot)
        elif current is self.range_plot and self.range_plot.is_empty() and not self.weight_plot.is_empty():
            self.detail_tabs.setCurrentWidget(self.weight_plot)

    def _on_layer_plot_clicked(self, name: str) -> None:
        self.select_layer(name)

    def _on_tree_context_menu(self, pos) -> None:
        idx = self.tree.indexAt(pos)
        if self.session is None or not idx.isValid():
            return
        self.tree_menu(idx).popup(self.tree.viewport().mapToGlobal(pos))

    def tree_menu(self, idx) -> QMenu:
        """The context menu of the (proxy) index `idx`; every action edits the core inventory."""
        name = self.proxy.mapToSource(idx).data(NameRole)
        inv = self.session.inventory
        info = inv[name]
        menu = QMenu(self)
        toggleable = bool(inv.resolve(name, strict=False))
        quant = menu.addAction("Quantize this subtree", lambda: inv.set_float(name, keep_float=False))
        keep = menu.addAction("Keep this subtree float", lambda: inv.set_float(name, keep_float=True))
        quant.setEnabled(toggleable)
        keep.setEnabled(toggleable)
        same_type = [h for h in inv.heads if inv[h].type == info.type]
        by_type = menu.addAction(f"Keep every {info.type} float ({len(same_type)})",
                                 lambda: inv.set_float(same_type, keep_float=True))
        by_type.setEnabled(bool(same_type))
        if self.session.mode == "torchao":  # the weights' bits of every layer of the subtree
            menu.addSeparator()
            under = [h for h in inv.heads if h == name or h.startswith(f"{name}.") or not name]
            for bits in (4, 8):
                action = menu.addAction(f"Weights {bits}-bit ({len(under)} layer(s))",
                                        lambda _=False, b=bits: self.set_weight_bits(under, b))
                action.setEnabled(bool(under))
        menu.addSeparator()
        menu.addAction("Copy row", lambda: QApplication.clipboard().setText(self.tree_model.row_text(name)))
        menu.addAction("Expand subtree", lambda: self.tree.expandRecursively(idx))
        menu.addAction("Collapse subtree", lambda: self.tree.collapse(idx))
        return menu

    def set_weight_bits(self, names, bits: int) -> None:
        """torchao: `names`' weights in `bits` (an override where it differs from the recipe's), then the
        model reconverted, as a toggle does; undoable."""
        session = self.session
        overrides = dict(session.recipe.overrides)
        for n in names:
            fields = overrides[n].to_dict() if n in overrides else {}
            fields.pop("weight_bits", None)
            if bits != session.recipe.weight_bits:
                fields["weight_bits"] = bits
            if fields:
                overrides[n] = fields
            else:
                overrides.pop(n, None)
        self._apply_configuration(session.inventory.float_layers, overrides, session.recipe.equalize)
        self._record_edit()
        self.statusBar().showMessage(f"{len(names)} layer(s) with {bits}-bit weights", 5000)
