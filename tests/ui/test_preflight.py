"""Before Qt starts, `qtapp` checks that its X11 platform plugin can load and a display answers, and says
what to install instead of letting Qt abort the process (issue 19, 11)."""

from __future__ import annotations

import os
import subprocess
import sys

from qtapp.ui.preflight import XCB_LIBRARIES, window_problem


def _load_without(*missing):
    def load(name):
        if name in missing or name.endswith("libqxcb.so"):
            raise OSError(f"{missing[0]}: cannot open shared object file: No such file or directory")
        return None
    return load


def test_missing_xcb_libraries_are_named_with_their_packages(tmp_path):
    plugin = tmp_path / "libqxcb.so"
    problem = window_problem({"DISPLAY": ":0"}, load=_load_without("libxcb-cursor.so.0", "libxcb-icccm.so.4"),
                             plugin=plugin)
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4 are missing" in problem
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4" in problem
    assert "QT_QPA_PLATFORM=offscreen qtapp --screenshot" in problem


def test_no_display_and_other_platforms():
    assert "DISPLAY is not set" in window_problem({})
    assert window_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert window_problem({"WAYLAND_DISPLAY": "wayland-0"}) is None  # Qt's Wayland plugin, not X11
    assert set(XCB_LIBRARIES.values()) >= {"libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"}


def test_qtapp_without_a_usable_x_display_says_why_instead_of_aborting(tmp_path):
    """On this machine either a library of Qt's xcb plugin is missing or no X server is at :987: Qt used to
    abort (exit 134) naming no package."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":987"
    proc = subprocess.run([sys.executable, "-m", "qtapp"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("qtapp: the window cannot open: ")
    assert "QT_QPA_PLATFORM=offscreen" in proc.stderr
