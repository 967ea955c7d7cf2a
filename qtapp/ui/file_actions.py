"""The main window's file side: opening models and recipes (with the pickle consent), recent
files, saving recipes, exporting, and drag and drop. A mixin of MainWindow, split out to keep each
module readable; it uses the window's session, runner, settings and status bar."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ..core.base.errors import CodeConsentRequired, ProgramFileRefused, UsageError
from ..core.base.resultset import write_bytes_atomic
from ..core.config.recipe import QuantRecipe
from ..core.model.safe_pickle import PickleRefused
from ..core.report.html import to_html
from ..core.report.render import points_csv, report_dict, write_report
from ..core.run.exporting import export
from ..core.run.session import QuantSession
from .dialogs import ExportDialog, FactoryDialog, TorchvisionDialog, code_consent_box, program_consent_box, trust_box
from .messages import for_window

log = logging.getLogger("qtapp.ui")
MAX_RECENT = 10


class FileActionsMixin:
    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _remember(self, entry: str) -> None:
        recent = [entry] + [r for r in self.recent_files() if r != entry]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        for entry in self.recent_files():
            action = self.recent_menu.addAction(entry)
            action.triggered.connect(lambda _=False, e=entry: self.open_path_or_spec(e))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    def open_path_or_spec(self, entry: str) -> None:
        if entry.lower().endswith(".json"):
            self.open_recipe(entry)
        elif entry.lower().endswith(".py"):  # a Python file: which callable builds the model? Ask.
            self.open_factory_dialog(f"{entry}:")
        else:
            self.open_spec(entry)

    def open_factory_dialog(self, target: str = "") -> FactoryDialog:
        """The Python-factory dialog (prefilled with `target`); opening it runs nothing until Open."""
        dialog = FactoryDialog(self)
        dialog.target.setText(target)

        def on_accepted() -> None:
            v = dialog.values()
            self.open_spec(v["model"], v["weights"], v["kwargs"], v["input_shape"])

        dialog.accepted.connect(on_accepted)
        dialog.open()
        return dialog

    def open_spec(self, spec: str, weights: str | None = None, kwargs: dict | None = None,
                  input_shape: str | None = None, trust: bool = False) -> None:
        try:
            recipe = QuantRecipe(model=spec, weights=weights, kwargs=kwargs or {}, input_shape=input_shape)
        except UsageError as exc:
            self._show_error("Cannot open model", exc)
            return
        self.open_recipe_object(recipe, trust=trust, remember=spec)

    def open_recipe(self, path: str) -> None:
        try:
            recipe = QuantRecipe.load(path)
        except UsageError as exc:
            self._show_error("Cannot open recipe", exc)
            return
        # The recipe names the model: a Python factory in it runs only with the user's consent.
        self.open_recipe_object(recipe, remember=str(Path(path).resolve()), named_by=Path(path))

    def open_recipe_object(self, recipe: QuantRecipe, trust: bool = False, remember: str | None = None,
                           named_by: Path | None = None) -> None:
        self.statusBar().showMessage(f"Opening {recipe.model}…")

        def on_result(session: QuantSession) -> None:
            self.set_session(session)
            if remember:
                self._remember(remember)

        def again_trusted() -> None:
            log.warning("user agreed to execute code for %s", recipe.model)
            self.open_recipe_object(recipe, trust=True, remember=remember, named_by=named_by)

        def on_error(exc, details) -> None:
            if isinstance(exc, PickleRefused) and not trust:
                self.ask_consent(trust_box(self, exc.path, exc.classes), again_trusted)
            elif isinstance(exc, ProgramFileRefused) and not trust:
                self.ask_consent(program_consent_box(self, exc.path, exc.kind), again_trusted)
            elif isinstance(exc, CodeConsentRequired) and not trust:
                self.ask_consent(code_consent_box(self, exc.spec, exc.source, exc.role), again_trusted)
            else:
                self._show_error("Cannot open model", exc, details)

        # A recipe file names its metric too: a function there runs only with the same consent.
        self._start("open", lambda cancel: QuantSession.open(recipe, trust, named_by=named_by, metric_named_by=named_by),
                    on_result, on_error)

    def ask_consent(self, box: QMessageBox, on_yes) -> QMessageBox:
        """Show a consent dialog (window-modal, not a nested event loop); `on_yes` runs only if the user
        presses its accept button. Nothing runs on Cancel or when the dialog is closed."""
        def on_clicked(button) -> None:
            if box.buttonRole(button) == QMessageBox.ButtonRole.AcceptRole:
                on_yes()
            else:
                self.statusBar().showMessage("Not opened: nothing from the file was run", 5000)

        box.buttonClicked.connect(on_clicked)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        return box

    def _on_open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model or recipe", "",
                                              "Models and recipes (*.pt *.pth *.ptl *.json);;All files (*)")
        if path:
            self.open_path_or_spec(path)

    def _on_open_torchvision(self) -> None:
        dialog = TorchvisionDialog(self)
        if dialog.exec():
            spec, weights = dialog.spec()
            self.open_spec(spec, weights=weights)

    def _on_open_factory(self) -> None:
        self.open_factory_dialog()

    def _on_open_recipe(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open recipe", "", "Recipes (*.json)")
        if path:
            self.open_recipe(path)

    def _on_save_recipe(self) -> None:
        if self.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", "recipe.json", "Recipes (*.json)")
        if path:
            self.save_recipe(path)

    def save_recipe(self, path: str) -> None:
        self.session.recipe.resolve_paths(Path.cwd())
        self.session.recipe.save(path)
        self._remember(str(Path(path).resolve()))
        self.statusBar().showMessage(f"Saved recipe {path}", 5000)

    def _ask_result_path(self, title: str, default: str, kinds: str) -> str | None:
        """Where to save a file of the current result (None: no result, or the user cancelled)."""
        if self.session is None or self.session.result is None:
            return None
        path, _ = QFileDialog.getSaveFileName(self, title, default, kinds)
        return path or None

    def _on_save_report(self) -> None:
        path = self._ask_result_path("Save report", "report.html", "HTML report (*.html)")
        if path:
            self.save_report(path)

    def save_report(self, path: str) -> None:
        """The current result's report.html: the same self-contained page as qtapp-cli --html writes."""
        write_bytes_atomic(Path(path), to_html(self.session.result).encode("utf-8"))
        note = "" if self.session.result_is_current() else " (of the last run, made before your changes)"
        self.statusBar().showMessage(f"Saved report {path}{note}", 8000)

    def _on_save_points(self) -> None:
        path = self._ask_result_path("Save point table", "points.csv", "CSV (*.csv)")
        if path:
            self.save_points(path)

    def save_points(self, path: str) -> None:
        """Every quantization point of the current result as CSV (render.points_csv), for a spreadsheet."""
        write_bytes_atomic(Path(path), points_csv(self.session.result).encode("utf-8"))
        self.statusBar().showMessage(f"Saved {len(self.session.result.layers)} points to {path}", 8000)

    def open_export_dialog(self) -> ExportDialog | None:
        if self.session is None or self.session.result is None:
            self.statusBar().showMessage("Quantize first: there is nothing to export yet", 5000)
            return None
        unavailable = {fmt: for_window(why) for fmt, why in self.session.unavailable_formats().items()}
        dialog = ExportDialog(self, self.settings.value("export/folder", str(Path.cwd() / "export")), unavailable)
        dialog.export_button.clicked.connect(lambda: self.export_to(dialog))
        dialog.open()
        return dialog

    def export_to(self, dialog: ExportDialog) -> None:
        formats, folder, session = dialog.chosen_formats(), Path(dialog.folder.text()), self.session
        if not formats or not dialog.folder.text().strip():
            dialog.table.setVisible(False)
            self.statusBar().showMessage("Choose a folder and at least one format", 5000)
            return
        self.settings.setValue("export/folder", str(folder))
        recipe = copy.deepcopy(session.recipe)
        try:
            # checked, and the current result taken, now
            request = session.export_request(folder, formats, measure=dialog.time_files.isChecked())
        except UsageError as exc:
            self._show_error("Cannot export", exc)
            return

        def job(cancel):
            result = yield from export(request, cancel)
            recipe.save(folder / "recipe.json")
            write_report(report_dict(result), folder / "report.json")
            return result

        def on_result(result) -> None:
            if self.session is session:
                session.adopt_result(result)
                self._add_run("export")  # the run's record gains its files' figures
                self.summary.show_result(session)  # the files' latencies join the summary's table
            dialog.show_results(result.exports)

        def on_progress(p):
            self._on_job_progress(p)
            dialog.progress.setRange(0, p.total)
            dialog.progress.setValue(p.done)

        def on_finished():
            dialog.progress.setVisible(False)
            dialog.export_button.setEnabled(True)

        dialog.progress.setVisible(True)
        dialog.export_button.setEnabled(False)
        self.controller.submit("export", job, on_result,
                               on_error=lambda exc, details: self._show_error("Export failed", exc, details),
                               on_finished=on_finished)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.open_path_or_spec(urls[0].toLocalFile())
            event.acceptProposedAction()

    def _on_export_plot(self, plot, title: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {title} plot", f"{title.replace(' ', '-')}.png", "PNG (*.png)")
        if path:
            plot.export_png(path)
            self.statusBar().showMessage(f"Saved {path}", 5000)
