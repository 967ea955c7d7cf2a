"""`qtapp [SPEC_OR_FILE] [--run] [--screenshot PATH]`: the window.

Settings (geometry, recent files) live in QSettings; QTAPP_SETTINGS_DIR points them at another
folder (the tests use a temporary one, so they never touch the user's real settings).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__


def make_settings():
    from PySide6.QtCore import QSettings

    folder = os.environ.get("QTAPP_SETTINGS_DIR")
    if folder:
        return QSettings(os.path.join(folder, "qtapp.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "qtapp", "Quantization Studio")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qtapp", description="Quantization Studio: the window.")
    p.add_argument("spec", nargs="?", help="model spec, model file or recipe (.json) to open")
    p.add_argument("--run", action="store_true", help="calibrate and quantize right after opening")
    p.add_argument("--select", metavar="LAYER", help="select this layer after the run (for screenshots)")
    p.add_argument("--screenshot", metavar="PATH", help="render the window to PATH (PNG) when done, then exit")
    p.add_argument("--size", default="1480x900", help="window size for --screenshot (default 1480x900)")
    p.add_argument("--version", action="version", version=f"qtapp {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from .preflight import window_problem

    problem = window_problem()
    if problem is not None:  # Qt would abort the process with a message that names no package
        print(f"qtapp: the window cannot open: {problem}", file=sys.stderr)
        return 1
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Quantization Studio")
    app.setOrganizationName("qtapp")
    window = MainWindow(make_settings())
    if args.screenshot:
        w, h = (int(v) for v in args.size.lower().split("x"))
        window.resize(w, h)
    window.show()
    if args.spec:
        window.open_path_or_spec(args.spec)
    if args.screenshot:
        return ScreenshotDriver(window, args).run(app)
    return app.exec()


class ScreenshotDriver:
    """Open, optionally quantize (and measure), select a layer, then grab the window to a PNG."""

    def __init__(self, window, args) -> None:
        self.window, self.args = window, args
        self.failed: str | None = None
        window.job_failed.connect(self._on_failed)

    def _on_failed(self, message: str) -> None:
        self.failed = message

    def _wait_idle(self, app, seconds: float = 900) -> None:
        import time

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            app.processEvents()
            if not self.window.runner.busy and self.window.controller.waiting is None:
                # give queued results (applied after the thread ends) a chance to land
                for _ in range(5):
                    app.processEvents()
                if not self.window.runner.busy:
                    return
            time.sleep(0.02)
        raise TimeoutError("the window did not finish its jobs in time")

    def run(self, app) -> int:
        window = self.window
        self._wait_idle(app)
        if self.args.run and window.session is not None and self.failed is None:
            window.run_quantize()
            self._wait_idle(app)
        if window.session is not None:
            layer = self.args.select or self._worst_layer()
            if self.args.select and self.args.select not in window.session.inventory:
                print(f"--select {self.args.select}: no such layer or point in {window.session.recipe.model}",
                      file=sys.stderr)
                window.close()
                return 2
            if layer:
                window.select_layer(layer)
        app.processEvents()
        if not window.grab().save(self.args.screenshot):
            print(f"could not write {self.args.screenshot}", file=sys.stderr)
            window.close()
            return 1
        print(f"saved {self.args.screenshot}")
        window.close()  # stops the worker thread before the application goes away
        if self.failed:
            print(f"error shown in the window: {self.failed}", file=sys.stderr)
            return 1
        return 0

    def _worst_layer(self) -> str | None:
        from ..core.report import render

        result = self.window.session.result
        worst = render.worst_layers(result, 1) if result is not None else []
        return worst[0].name if worst else None
