"""The no-Qt rule: qtapp.core imports and quantizes with Qt made unimportable, and the
import-linter contract in pyproject.toml holds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import qtapp

REPO = Path(qtapp.__file__).resolve().parents[1]

NO_QT_SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, pkgutil, sys

    BLOCKED = ("PySide6", "pyqtgraph", "shiboken6")
    attempts = []

    class BlockQt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"{name} is blocked: qtapp.core must run without Qt")
            return None

    sys.meta_path.insert(0, BlockQt())
    try:
        import PySide6
    except ImportError:
        pass
    else:
        raise SystemExit("the Qt blocker does not work")
    attempts.clear()

    import qtapp.core
    modules = [m.name for m in pkgutil.walk_packages(qtapp.core.__path__, "qtapp.core.")]
    for name in modules:
        importlib.import_module(name)

    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import DataSpec, QuantRecipe
    from qtapp.core.run.session import QuantSession

    recipe = QuantRecipe(model="demo", calibration=DataSpec(batches=2))
    session = drive(QuantSession.open(recipe))
    result = drive(session.quantize())
    print(json.dumps({
        "modules": modules,
        "accuracy": result.output.accuracy_quantized,
        "quantized": [layer.quantized for layer in result.layers],
        "qt_loaded": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
        "attempts": attempts,
    }))
""")


def test_core_imports_and_quantizes_with_qt_blocked(tmp_path):
    proc = subprocess.run([sys.executable, "-c", NO_QT_SCRIPT], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    core = REPO / "qtapp" / "core"
    expected = {"qtapp.core." + ".".join(p.relative_to(core).with_suffix("").parts).removesuffix(".__init__")
                for p in core.rglob("*.py") if p != core / "__init__.py"}
    assert set(data["modules"]) == expected
    assert data["accuracy"] > 0.9 and data["quantized"] and all(data["quantized"])
    assert data["qt_loaded"] == []
    assert data["attempts"] == []  # core never even tried to import Qt


def test_import_linter_contract_holds():
    lint = Path(sys.executable).parent / "lint-imports"
    lint_path = str(lint) if lint.exists() else shutil.which("lint-imports")
    assert lint_path, "import-linter is not installed"
    proc = subprocess.run([lint_path], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for contract in ("qtapp.core never imports Qt or the UI", "qtapp.core is layered",
                     "the window and the CLI sit above the core"):
        assert f"{contract} KEPT" in proc.stdout
