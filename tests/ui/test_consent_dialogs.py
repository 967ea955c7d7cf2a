"""The window asks before running code a recipe names, says which callable and which file, and runs
nothing unless the user accepts."""

from __future__ import annotations

import json

import pytest

from .test_main_window import answer, consent_dialog

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


@pytest.fixture
def factory_recipe(tmp_path):
    canary = tmp_path / "CANARY"
    (tmp_path / "net.py").write_text(f"open({str(canary)!r}, 'w').write('imported')\n"
                                     "import torch.nn as nn\n"
                                     "def build():\n    m = nn.Sequential(nn.Linear(4, 3))\n"
                                     "    m.example_input_shape = (1, 4)\n    return m\n")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"version": 1, "model": "net.py:build"}))
    return recipe, canary


def test_a_recipe_naming_a_factory_asks_and_runs_nothing_on_cancel(qtbot, window, factory_recipe):
    recipe, canary = factory_recipe
    window.open_recipe(str(recipe))
    box = consent_dialog(qtbot, window, "codeConsentDialog")
    assert "net.py:build" in box.text() and str(recipe) in box.text()
    answer(box, accept=False)
    qtbot.wait(200)
    assert not canary.exists() and window.session is None


def test_accepting_opens_the_model(qtbot, window, factory_recipe):
    recipe, canary = factory_recipe
    window.open_recipe(str(recipe))
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        answer(consent_dialog(qtbot, window, "codeConsentDialog"), accept=True)
    assert canary.exists() and window.session.recipe.model.endswith("net.py:build")


@pytest.fixture
def torchscript_file(tmp_path):
    import subprocess
    import sys

    canary = tmp_path / "CANARY"
    maker = tmp_path / "make.py"
    maker.write_text(
        "import torch\n"
        "class Payload(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.x = torch.zeros(1)\n"
        "    @torch.jit.export\n    def __getstate__(self):\n        return (self.x, self.training)\n"
        "    @torch.jit.export\n    def __setstate__(self, state: tuple[torch.Tensor, bool]):\n"
        f"        self.training = state[1]\n        self.x = torch.from_file({str(canary)!r}, shared=True, size=4)\n"
        "    def forward(self, x):\n        return x + 1\n"
        f"torch.jit.script(Payload()).save({str(tmp_path / 'model.pt')!r})\n")
    subprocess.run([sys.executable, "-W", "ignore", str(maker)], check=True, timeout=120)
    return tmp_path / "model.pt", canary


def test_a_torchscript_file_asks_before_loading_and_logs_no_traceback(qtbot, window, torchscript_file, caplog):
    import logging

    path, canary = torchscript_file
    with caplog.at_level(logging.INFO, logger="qtapp"):
        window.open_path_or_spec(str(path))
        box = consent_dialog(qtbot, window, "programConsentDialog")
    assert str(path) in box.text() and "TorchScript" in box.text() and "program" in box.text()
    assert not canary.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a question, not a failure
    assert "Traceback" not in caplog.text
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        answer(box, accept=True)
    assert canary.exists() and window.session.loaded.is_torchscript
