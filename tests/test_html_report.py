"""report.html: self-contained (no network, no scripts), the same figures and notes as report.json,
and it renders in a real headless browser where one is installed."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qtapp.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "out"
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = main(["quantize", "--no-time-files", "demo", "--batches", "2", "--float", "fc1", "--calib", "random", "--html",
                     "--format", "pt", "--out", str(out)])
    assert code == 0
    assert f"wrote       {out / 'report.html'}" in stdout.getvalue()
    return out


def test_the_page_is_self_contained_and_says_what_report_json_says(result_dir):
    html = (result_dir / "report.html").read_text()
    report = json.loads((result_dir / "report.json").read_text())
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html), "no resource from the network"
    for note in report["notes"]:
        assert note.replace("'", "&#x27;") in html
    for layer in report["layers"]:
        assert layer["name"] in html
    assert f"SQNR {report['output']['sqnr_db']:.1f} dB" in html
    assert html.count("<svg") == 3  # per-layer bars, error histogram, float-vs-int8 scatter
    assert "(kept float)" in html  # fc1 is drawn as a float bar, not as an int8 one


def test_the_page_opens_with_the_verdict_report_json_gives(result_dir):
    """report.html showed every figure but not the verdict (usable / degraded / broken, why, what next)."""
    from html import escape

    from qtapp.core.report.verdict import COLOURS

    html = (result_dir / "report.html").read_text()
    verdict = json.loads((result_dir / "report.json").read_text())["verdict"]
    shown = f"<p class='verdict {verdict['level']}'><b>{verdict['level'].upper()}</b>: {escape(verdict['reason'])}"
    assert shown in html and html.index(shown) < html.index("<h2>Notes</h2>")
    if verdict["next"]:
        assert escape(verdict["next"]) in html
    background, text = COLOURS[verdict["level"]]  # the window's banner colours
    assert f".verdict.{verdict['level']}{{background:{background};color:{text};" in html


def test_each_bar_has_the_colour_the_window_gives_its_sqnr(result_dir):
    from qtapp.core.report.render import sqnr_colour

    html = (result_dir / "report.html").read_text()
    report = json.loads((result_dir / "report.json").read_text())
    fills = re.findall(r"fill='(#[0-9a-f]{6})'><title>(.+?): local ", html)
    by_name = dict((name, fill) for fill, name in fills)
    for layer in report["layers"]:
        if layer["quantized"] and layer["local_sqnr_db"] is not None:
            assert by_name[layer["name"]] == sqnr_colour(layer["local_sqnr_db"]), layer["name"]


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(result_dir, tmp_path):
    from PIL import Image

    png = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400",
                    f"--screenshot={png}", (result_dir / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(png).convert("RGB")
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    kept_float_grey = (0xB4, 0xB4, 0xB4)
    assert kept_float_grey in colours  # the fc1 bar was drawn
    assert any(r > 150 and g < 200 and b < 100 for r, g, b in colours)  # the orange error histogram
