"""Drive the real window as a user would, and check every figure it shows against the run's report.json.

    python benchmarks/drive_window.py --out /tmp/drive [--model demo] [--size 1280x720]

Steps: open, quantize, toggle a point float (a reconversion: timed, and checked not to recalibrate),
sensitivity, tune cancelled mid-search (the time from Esc to idle is measured), tune to the end, compare
the first and last runs, undo the tune, save report.html. After each run the script writes that run's
report.json (render.report_dict, the CLI's writer) into --out and reads the window's figures back from its
widgets: the summary table, the verdict banner, the Output error title, every tree row's local and
accumulated SQNR, every bar of the per-point chart, the sensitivity bars, the trade-off points, the Runs
panel's rows and paired bars. Any figure that differs from report.json (to the digits shown) is listed and
the script exits with 1.

Under a real X server (DISPLAY set, `xdotool` installed; e.g. `xvfb-run -s "-screen 0 1920x1080x24"`), the
keys (Ctrl+R, Ctrl+Shift+S, Ctrl+Shift+T, Esc, Ctrl+Shift+C, Ctrl+Z) go through the X server with
xdotool to the window that has focus, and clicks on the tree are real pointer clicks; without one, the
window runs offscreen and the same keys are sent with QTest. A screenshot of each step is saved in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the screenshots, report.json files and report.html")
    p.add_argument("--model", default="demo", help="what File > Open opens (default: the demo)")
    p.add_argument("--size", default="1280x720", help="window size (default 1280x720)")
    p.add_argument("--point", default="fc1", help="the point to toggle float (default fc1)")
    p.add_argument("--target", default="sqnr>=40", help="the tune's target (default sqnr>=40)")
    args = p.parse_args(argv)
    real_x = bool(os.environ.get("DISPLAY")) and shutil.which("xdotool") is not None
    if not real_x:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QTAPP_SETTINGS_DIR", str(Path(args.out) / "settings"))
    Path(os.environ["QTAPP_SETTINGS_DIR"]).mkdir(parents=True, exist_ok=True)
    driver = Driver(Path(args.out), args, real_x)
    return driver.run()


class Driver:
    def __init__(self, out: Path, args, real_x: bool) -> None:
        from PySide6.QtWidgets import QApplication

        from qtapp.ui.app import make_settings
        from qtapp.ui.main_window import MainWindow

        self.out, self.args, self.real_x = out, args, real_x
        out.mkdir(parents=True, exist_ok=True)
        self.app = QApplication.instance() or QApplication([])
        self.window = MainWindow(make_settings())
        w, h = (int(v) for v in args.size.lower().split("x"))
        self.window.resize(w, h)
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()
        self.mismatches: list[str] = []
        self.checked = 0
        self.timings: dict[str, float] = {}
        self.reports: dict[int, dict] = {}  # run number -> its report.json as written
        self.applied = 0
        self.window.result_applied.connect(self._on_applied)
        self.wait(lambda: self.window.isVisible(), 5)
        print(f"window {args.size}, {'a real X server, keys by xdotool' if real_x else 'offscreen, keys by QTest'}")

    def _on_applied(self) -> None:
        self.applied += 1

    # -- driving -------------------------------------------------------------------------------------
    def wait(self, condition, seconds: float) -> float:
        t0 = time.perf_counter()
        while not condition():
            if time.perf_counter() - t0 > seconds:
                raise TimeoutError(f"waited {seconds:.0f} s")
            self.app.processEvents()
            time.sleep(0.005)
        return time.perf_counter() - t0

    def idle(self) -> bool:
        return not self.window.runner.busy and self.window.controller.waiting is None

    def key(self, keys: str) -> None:
        """`keys` in xdotool's spelling (ctrl+shift+t, Escape)."""
        if self.real_x:
            self.window.activateWindow()
            self.app.processEvents()
            proc = subprocess.Popen(["xdotool", "key", "--clearmodifiers", keys])
            self.wait(lambda: proc.poll() is not None, 10)
            return
        from PySide6.QtCore import Qt
        from PySide6.QtGui import QKeySequence
        from PySide6.QtTest import QTest

        parts = keys.split("+")
        name = {"Escape": "Esc"}.get(parts[-1], parts[-1].upper() if len(parts[-1]) == 1 else parts[-1])
        seq = QKeySequence("+".join([*(m.capitalize() for m in parts[:-1]), name]))[0]
        target = self.app.focusWidget() or self.window
        QTest.keyClick(target, Qt.Key(seq.key()), seq.keyboardModifiers())

    def click(self, widget, pos) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtTest import QTest

        if self.real_x:
            g = widget.mapToGlobal(pos)
            proc = subprocess.Popen(["xdotool", "mousemove", "--sync", str(g.x()), str(g.y()), "click", "1"])
            self.wait(lambda: proc.poll() is not None, 10)
            return
        QTest.mouseClick(widget, Qt.MouseButton.LeftButton, pos=pos)

    def shot(self, name: str) -> None:
        self.app.processEvents()
        self.window.grab().save(str(self.out / f"{name}.png"))

    def run_and_wait(self, keys: str, what: str, seconds: float = 600) -> float:
        before = self.applied
        t0 = time.perf_counter()
        self.key(keys)
        self.wait(lambda: self.applied > before and self.idle(), seconds)
        self.timings[what] = time.perf_counter() - t0
        return self.timings[what]

    # -- the steps -----------------------------------------------------------------------------------
    def run(self) -> int:
        w = self.window
        try:
            t0 = time.perf_counter()
            w.open_spec(self.args.model)
            self.wait(lambda: w.session is not None and self.idle(), 300)
            self.timings["open"] = time.perf_counter() - t0
            self.shot("1-open")

            self.run_and_wait("ctrl+r", "quantize")
            self.check("quantize")
            self.shot("2-quantize")

            calibration = w.session.calibrated
            before = self.applied
            t0 = time.perf_counter()
            self.toggle(self.args.point)
            self.wait(lambda: self.applied > before and self.idle(), 600)
            self.timings["toggle reconversion"] = time.perf_counter() - t0
            self.expect("toggle: calibration kept", w.session.calibrated is calibration, True)
            self.expect("toggle: the point float", self.args.point in w.session.result.float_layers, True)
            self.check("toggle")
            self.shot("3-toggle")

            self.run_and_wait("ctrl+shift+s", "sensitivity", 1200)
            self.check("sensitivity")
            self.shot("4-sensitivity")

            w.tune_panel.target_edit.setText(self.args.target)
            w.tree.setFocus()  # the tune key from the tree, as after a click on it
            self.key("ctrl+shift+t")
            self.wait(lambda: w.progress_label.text().startswith("tune: trying"), 600)
            t0 = time.perf_counter()
            self.key("Escape")
            self.wait(self.idle, 60)
            self.timings["cancel tune (Esc to idle)"] = time.perf_counter() - t0
            tried = w.tradeoff_plot.tune()
            self.expect("cancelled tune: what was tried is shown", tried is not None and tried.cancelled, True)
            self.expect("cancelled tune: nothing applied", self.args.point in w.session.inventory.float_layers, True)
            self.shot("5-tune-cancelled")

            self.run_and_wait("ctrl+shift+t", "tune", 1800)
            self.check("tune")
            self.shot("6-tune")

            self.key("ctrl+shift+c")
            self.wait(lambda: w.runs_dock.isVisible(), 10)
            numbers = w.runs_panel.run_numbers()
            w.runs_panel.select(numbers[0], numbers[-1])
            self.check_runs(numbers[0], numbers[-1])
            self.shot("7-compare")

            w.tree.setFocus()
            self.wait(w.tree.hasFocus, 5)
            undo_text = w.undo_action.text()
            before = self.applied
            self.key("ctrl+z")
            self.wait(lambda: self.applied > before and self.idle(), 600)
            print(f"{undo_text}: float points now {sorted(w.session.inventory.float_layers)}")
            self.expect("undo the tune: the float points before it",
                        sorted(w.session.inventory.float_layers), sorted(tried.steps[0].scored.config.float_points))
            self.check("undo")
            self.shot("8-undo")

            html = self.out / "report.html"
            w.save_report(str(html))
            text = html.read_text()
            report = self.reports[max(self.reports)]
            sqnr = report["output"]["sqnr_db"]
            self.expect("report.html: the output SQNR", f"{sqnr:.1f} dB" in text or f"{sqnr:.2f}" in text, True)
        finally:
            w.close()
        for what, seconds in self.timings.items():
            print(f"  {what}: {seconds:.2f} s")
        print(f"{self.checked} figures checked against report.json, {len(self.mismatches)} differ")
        for m in self.mismatches:
            print("  DIFFERS:", m)
        return 1 if self.mismatches else 0

    def toggle(self, name: str) -> None:
        """A click on the point's Int8 check box in the tree, as a user makes it."""
        from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

        from qtapp.ui.layer_model import COL_QUANT

        w = self.window
        index = w.proxy.mapFromSource(w.tree_model.index_of(name, COL_QUANT))
        w.tree.scrollTo(index)
        self.app.processEvents()
        option = QStyleOptionViewItem()
        w.tree.itemDelegateForIndex(index).initStyleOption(option, index)
        option.rect = w.tree.visualRect(index)
        check = w.tree.style().subElementRect(QStyle.SubElement.SE_ItemViewItemCheckIndicator, option, w.tree)
        self.click(w.tree.viewport(), check.center())

    # -- the checks -----------------------------------------------------------------------------------
    def expect(self, what: str, shown, wanted) -> None:
        self.checked += 1
        if shown != wanted:
            self.mismatches.append(f"{what}: shown {shown!r}, report.json {wanted!r}")

    def check(self, step: str) -> None:
        """Write the shown run's report.json, read it back, and compare every figure the window shows."""
        from qtapp.core.report.render import report_dict, write_report
        from qtapp.ui.layer_model import COL_LOCAL, COL_SQNR

        w = self.window
        number = w.session.runs.records[-1].number
        path = self.out / f"run-{number}-{step}" / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_report(report_dict(w.session.result), path)
        report = json.loads(path.read_text())
        self.reports[number] = report
        self.expect(f"{step}: the Runs list's record is this run's report",
                    _rounded(w.session.runs.get(number).report), _rounded(report))
        f = w.summary.figures
        self.expect(f"{step}: summary size float", f["size_float"], report["size_bytes"]["float"])
        self.expect(f"{step}: summary size quantized", f["size_quantized"], report["size_bytes"]["quantized"])
        self.expect(f"{step}: summary latency float", f["latency_float"], report["latency_ms"]["float"])
        self.expect(f"{step}: summary latency quantized", f["latency_quantized"], report["latency_ms"]["quantized"])
        self.expect(f"{step}: summary accuracy (quantized)", f["accuracy_quantized"], report["output"]["accuracy_quantized"])
        self.expect(f"{step}: summary SQNR", f["sqnr_db"], report["output"]["sqnr_db"])
        text = w.summary.text()
        for label, value in (("size float", _mb(report["size_bytes"]["float"])),
                             ("size int8", _mb(report["size_bytes"]["quantized"])),
                             ("latency float", _ms(report["latency_ms"]["float"])),
                             ("latency int8", _ms(report["latency_ms"]["quantized"])),
                             ("output SQNR", f"SQNR {report['output']['sqnr_db']:.1f} dB"),
                             ("cosine", f"cosine {report['output']['cosine']:.5f}")):
            self.expect(f"{step}: summary text has {label} {value}", value in text, True)
        verdict = report["verdict"]
        self.expect(f"{step}: verdict level", w.verdict_banner.verdict.level, verdict["level"])
        self.expect(f"{step}: verdict words", verdict["reason"] in _plain(w.verdict_banner.label.text()), True)
        sqnr = report["output"]["sqnr_db"]
        self.expect(f"{step}: Output error title", f"SQNR {sqnr:.1f} dB" in w.output_plot.outputs_title(), True)
        layers = {layer["name"]: layer for layer in report["layers"]}
        for name, layer in layers.items():
            for col, key in ((COL_LOCAL, "local_sqnr_db"), (COL_SQNR, "accumulated_sqnr_db")):
                shown = w.tree_model.data(w.tree_model.index_of(name, col))
                value = layer[key]
                if value is None or layer.get("kept_float") and key == "accumulated_sqnr_db" and shown in ("", None):
                    continue
                self.expect(f"{step}: tree {name} {key}", _first_number(shown), round(value, 1))
        plot = w.layer_plot
        key = "local_sqnr_db" if plot.shown_metric() == "local" else "accumulated_sqnr_db"
        for name, height in zip(plot.bar_names(), plot.bar_heights()):
            self.expect(f"{step}: bar {name}", height, layers[name][key])
        if "sensitivity" in report and step == "sensitivity":
            gains = {p["name"]: p["gain"] for p in report["sensitivity"]["points"]}
            for name, gain in zip(w.sensitivity_plot.names(), w.sensitivity_plot.gains()):
                self.expect(f"{step}: sensitivity bar {name}", gain, gains[name])
        if "tune" in report and step == "tune":  # the trade-off's points against tune.json, as the CLI writes it
            from qtapp.core.report.render import json_safe

            tune_json = path.parent / "tune.json"
            tune_json.write_text(json.dumps(json_safe(w.session.result.tune.to_json()), indent=2))
            steps = json.loads(tune_json.read_text())["steps"]
            for i, size, score in w.tradeoff_plot.configurations():
                self.expect(f"{step}: trade-off point {i} score", score, steps[i]["score"])
                self.expect(f"{step}: trade-off point {i} size", round(size, 6), round(steps[i]["size_bytes"] / 1e6, 6))
            self.expect(f"{step}: the tune's chosen score", w.tradeoff_plot.tune().best.score, report["tune"]["score"])

    def check_runs(self, a: int, b: int) -> None:
        w = self.window
        ra, rb = self.reports[a], self.reports[b]
        rows = {label: (x, y) for label, x, y, _c in w.runs_panel.figure_rows()}
        self.expect("compare: output SQNR", rows["output SQNR"],
                    (f"{ra['output']['sqnr_db']:.1f} dB", f"{rb['output']['sqnr_db']:.1f} dB"))
        self.expect("compare: size", rows["size (quantized)"],
                    (_mb(ra["size_bytes"]["quantized"]), _mb(rb["size_bytes"]["quantized"])))
        self.expect("compare: latency", rows["latency (quantized)"],
                    (_ms(ra["latency_ms"]["quantized"]), _ms(rb["latency_ms"]["quantized"])))
        self.expect("compare: verdicts", rows["verdict"], (ra["verdict"]["level"].upper(), rb["verdict"]["level"].upper()))
        la = {x["name"]: x for x in ra["layers"]}
        lb = {x["name"]: x for x in rb["layers"]}
        for name, x, y in w.runs_panel.bar_pairs():
            self.expect(f"compare: {name} local A", x, la[name]["local_sqnr_db"] if name in la else None)
            self.expect(f"compare: {name} local B", y, lb[name]["local_sqnr_db"] if name in lb else None)


def _mb(n) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _ms(x) -> str:
    return "–" if x is None else f"{x:.2f} ms"


def _plain(html: str) -> str:
    import re
    from html import unescape

    return unescape(re.sub(r"<[^>]+>", "", html))


def _first_number(text):
    import re

    m = re.search(r"-?\d+(\.\d+)?", text or "")
    return float(m.group()) if m else text


def _rounded(report: dict) -> str:
    """A report as JSON text without its timing-free differences (floats written by json)."""
    return json.dumps(report, sort_keys=True, default=str)


if __name__ == "__main__":
    sys.exit(main())
