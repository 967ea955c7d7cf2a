#!/usr/bin/env python
"""The error on the graph, checked in a real browser: Model Explorer's own page, in headless Chromium, shows
the node data `qtapp-cli analyze --graph` wrote, and the worst point's node is the reddest one.

Not a pytest test (it needs Chromium, chromedriver, Selenium and Model Explorer, and takes about 30 s,
most of it Model Explorer's server importing torch). Steps:

  1. `qtapp-cli analyze demo --out DIR --graph` (or --folder DIR: a folder it wrote already)
  2. Model Explorer's server on localhost, started as the window starts it (node_data.json given last, so
     it colours the graph), on a free port
  3. its page in headless Chromium (a new empty profile, no background networking); "expand all layers"
  4. read Model Explorer's own "Node data" table: every row's local SQNR and its background colour, each
     row matched to its node id by position in graph.pt2 (and its label checked)
  5. select the worst point's node (Model Explorer zooms to it) and take a screenshot; in the graph canvas,
     no pixel is redder than the worst point's colour, and that colour is drawn

Prints what it found; exit code 0 when every check holds, 1 otherwise, 2 when a tool is missing.
    pip install -e ".[graph]" selenium; apt-get install chromium chromium-driver
    python benchmarks/graph_overlay_check.py [--folder DIR] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qtapp.core.report.graph import FILES, GRAPH_ID, LOCAL_FILE  # noqa: E402
from qtapp.core.run.graphing import GRAPH_FILE, GraphFiles  # noqa: E402

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000")
_RGB = re.compile(r"background-color:\s*rgb\((\d+),\s*(\d+),\s*(\d+)\)")


def _hex(rgb) -> str:
    return "#" + "".join(f"{v:02x}" for v in rgb)


def _redness(rgb) -> int:
    return rgb[0] - rgb[1]


def analyzed_demo(folder: Path) -> None:
    cmd = [sys.executable, "-m", "qtapp.cli", "analyze", "demo", "--out", str(folder), "--graph"]
    print("$", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    print("\n".join(line for line in done.stdout.splitlines() if "graph" in line))
    if done.returncode != 0:
        sys.exit(f"analyze failed ({done.returncode}):\n{done.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_model_explorer(files: GraphFiles, port: int):
    """(the server process, the page URL it prints). Ours to stop."""
    cmd = [sys.executable, "-m", "model_explorer", *files.model_explorer_args(), "--no_open_in_browser",
           "--port", str(port)]
    print("$", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=files.folder)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line.startswith(f"http://localhost:{port}/"):
            print(f"Model Explorer up after {time.monotonic() - t0:.1f} s")
            return proc, line.strip()
    proc.kill()
    sys.exit("Model Explorer's server did not start")


def browser(chromium: str, chromedriver: str, profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def wait_for(fn, timeout: float, what: str):
    """fn()'s first true value; the page rebuilds itself while it loads, so an element gone stale meanwhile
    is a "not yet"."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            value = fn()
        except (StaleElementReferenceException, NoSuchElementException):
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(what)


_EXPAND_ALL = """return [...document.querySelectorAll('mat-icon')]
    .find(e => e.textContent.trim() === 'unfold_more_double')?.closest('button, div') ?? null"""


def node_table(driver) -> tuple[list[str], list[str], list[tuple]]:
    """Model Explorer's "Node data" table: (the providers' names in column order, the one colouring the
    graph (its eye icon selected), rows of (index, label, [(text, rgb or None) per provider], label cell))."""
    from selenium.webdriver.common.by import By

    table = driver.find_element(By.CSS_SELECTOR, "table.results")
    names, shown = [], []
    for th in table.find_elements(By.CSS_SELECTOR, "thead th.value-col"):
        names.append(th.find_element(By.CSS_SELECTOR, ".stat-label").get_attribute("textContent").strip())
        if th.find_elements(By.CSS_SELECTOR, ".icon-container.visibility.selected"):
            shown.append(names[-1])
    rows = []
    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        tds = tr.find_elements(By.TAG_NAME, "td")
        cells = []
        for td in tds[2:2 + len(names)]:
            m = _RGB.search(td.get_attribute("style") or "")
            cells.append((td.get_attribute("textContent").strip(), tuple(int(v) for v in m.groups()) if m else None))
        rows.append((int(tds[0].get_attribute("textContent")), tds[1].get_attribute("textContent").strip(), cells, tds[1]))
    return names, shown, rows


def me_label(node) -> str:
    """The label Model Explorer's PyTorch adapter gives a node."""
    if node.op == "call_function" and hasattr(node.target, "overloadpacket"):
        return str(node.target.overloadpacket)
    return node.name if node.op in ("placeholder", "output") else str(node.target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="a folder `qtapp-cli analyze --graph` wrote (default: analyze "
                                                    "the demo into a new temporary folder)")
    parser.add_argument("--screenshot", type=Path, help="where to save the PNG (default: FOLDER/graph_overlay.png)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    missing = [what for what, ok in (("chromium", Path(args.chromium).exists()),
                                     ("chromedriver", Path(args.chromedriver).exists()),
                                     ("selenium", importlib.util.find_spec("selenium") is not None),
                                     ("model_explorer", importlib.util.find_spec("model_explorer") is not None)) if not ok]
    if missing:
        print(f"cannot check: {', '.join(missing)} not installed", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="graph-overlay-check-"))
    folder = args.folder or work / "demo"
    if args.folder is None:
        analyzed_demo(folder)
    files = GraphFiles(folder, (GRAPH_FILE, *FILES))
    shot = args.screenshot or folder / "graph_overlay.png"
    local = json.loads((folder / LOCAL_FILE).read_text())[GRAPH_ID]["results"]
    worst_node = min(local, key=lambda n: local[n]["value"])
    worst = local[worst_node]
    nodes = list(torch.export.load(folder / GRAPH_FILE).graph.nodes)
    print(f"node_data.json: {len(local)} of {len(nodes)} nodes have data; worst point {worst['point']} "
          f"{worst['value']} dB on node {worst_node}, {worst['bgColor']}")

    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    proc, url = start_model_explorer(files, free_port())
    driver = None
    try:
        from selenium.webdriver.common.by import By

        driver = browser(args.chromium, args.chromedriver, str(work / "profile"))
        t0 = time.monotonic()
        driver.get(url)
        wait_for(lambda: driver.execute_script(_EXPAND_ALL), 60, "the graph's toolbar")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "table.results tbody tr")) == len(nodes), 60,
                 "the node data table")
        print(f"page and overlay loaded in {time.monotonic() - t0:.1f} s")
        time.sleep(1.0)  # the graph settles
        wait_for(lambda: driver.execute_script(_EXPAND_ALL).click() or True, 10, "expanding all layers")
        time.sleep(1.5)
        names, shown, rows = node_table(driver)
        print(f"node data providers: {names}; colouring the graph: {shown}")
        check(len(names) == 3 and any(n.startswith("local SQNR") for n in names), "the three node data files are loaded")
        col = next(i for i, n in enumerate(names) if n.startswith("local SQNR"))
        check(shown == [names[col]], "the graph is coloured by local SQNR (node_data.json, given last)")
        labels_ok = all(me_label(nodes[i]) == label for i, label, _, _ in rows)
        check(labels_ok, "each table row is the graph.pt2 node at its position")
        coloured = {nodes[i].name: (cells[col][0], cells[col][1]) for i, _, cells, _ in rows if cells[col][1]}
        check(set(coloured) == set(local), f"{len(coloured)} nodes coloured, the {len(local)} node_data.json names")
        same = all(float(text) == local[n]["value"] and _hex(rgb) == local[n]["bgColor"] for n, (text, rgb) in coloured.items())
        check(same, "every coloured node shows node_data.json's value and colour")
        reddest = max(coloured, key=lambda n: _redness(coloured[n][1]))
        check(reddest == worst_node, f"the reddest node in Model Explorer, {reddest} {_hex(coloured[reddest][1])}, is "
                                     f"the worst point's node {worst_node} ({worst['point']}, {worst['value']} dB)")
        ties = [n for n in coloured if n != reddest and _redness(coloured[n][1]) >= _redness(coloured[reddest][1])]
        check(not ties, "no other node is as red" + (f" ({', '.join(ties)} are)" if ties else ""))

        row = next(r for r in rows if nodes[r[0]].name == worst_node)
        driver.execute_script("arguments[0].scrollIntoView()", row[3])
        row[3].click()  # Model Explorer selects the node and zooms to it
        time.sleep(2.5)
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        canvas = max(driver.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"] * c.size["height"])
        ratio = driver.execute_script("return window.devicePixelRatio") or 1
        box = [int(v * ratio) for v in (canvas.location["x"], canvas.location["y"],
                                        canvas.location["x"] + canvas.size["width"],
                                        canvas.location["y"] + canvas.size["height"])]
        pixels = np.asarray(Image.open(shot).convert("RGB").crop(box), dtype=np.int32).reshape(-1, 3)
        target = tuple(int(worst["bgColor"][i:i + 2], 16) for i in (1, 3, 5))
        drawn = int((pixels == target).all(axis=1).sum())
        redder = int((pixels[:, 0] - pixels[:, 1] > _redness(target)).sum())
        check(drawn > 500, f"the worst node's colour {worst['bgColor']} fills {drawn} pixels of the graph canvas")
        check(redder == 0, f"no pixel of the canvas is redder than it ({redder} are)")
        print(f"screenshot: {shot}")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work / "profile", ignore_errors=True)
        if args.folder is None and args.screenshot is not None:
            shutil.rmtree(work, ignore_errors=True)  # nothing of it is asked for
        elif args.folder is None:
            print(f"files and screenshot kept in {folder}")
    print("PASS" if not failures else f"FAILED: {len(failures)} check(s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
