"""Before Qt starts: can the window open on this machine? Qt aborts the whole process, with a message
that names no package, when its X11 platform plugin cannot load (a system library missing) or no X
display answers. Checked here first, without importing Qt, so that `qtapp` says what to install instead.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

# The system libraries Qt 6's xcb platform plugin needs (libqxcb.so, libQt6XcbQpa.so), with the Debian
# and Ubuntu packages that hold them. PySide6's wheels ship Qt, not these.
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
OFFSCREEN_HINT = ("Meanwhile, QT_QPA_PLATFORM=offscreen qtapp --screenshot out.png demo --run renders the window to "
                  "a PNG without X11, and qtapp-cli does everything the window does")


def window_problem(env=None, load=ctypes.CDLL, plugin: Path | None = None) -> str | None:
    """Why the window cannot open on this X11 system, in words with what to do; None when it can (or
    when Qt will not use X11 here: another platform, or not Linux)."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux") or env.get("QT_QPA_PLATFORM", "xcb").split(":")[0] != "xcb":
        return None
    if not env.get("DISPLAY"):
        if env.get("WAYLAND_DISPLAY") and "QT_QPA_PLATFORM" not in env:
            return None  # Qt picks its Wayland plugin
        return f"no X display: DISPLAY is not set. {OFFSCREEN_HINT}."
    plugin = plugin or _xcb_plugin()
    if plugin is not None:
        try:
            load(str(plugin))
        except OSError as exc:
            missing = [name for name in XCB_LIBRARIES if not _loads(load, name)]
            if missing:
                packages = " ".join(XCB_LIBRARIES[name] for name in missing)
                return (f"Qt's X11 platform plugin cannot load: {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} missing. On Debian or Ubuntu: "
                        f"sudo apt install {packages}. {OFFSCREEN_HINT}.")
            return f"Qt's X11 platform plugin cannot load ({exc}). {OFFSCREEN_HINT}."
    display = env["DISPLAY"]
    if not _display_answers(load, display):
        return f"no X display answers at DISPLAY={display}. {OFFSCREEN_HINT}."
    return None


def _xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.exists() else None


def _loads(load, name: str) -> bool:
    try:
        load(name)
    except OSError:
        return False
    return True


def _display_answers(load, display: str) -> bool:
    try:
        xcb = load("libxcb.so.1")
    except OSError:
        return False
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    try:
        return xcb.xcb_connection_has_error(connection) == 0
    finally:
        xcb.xcb_disconnect(connection)
