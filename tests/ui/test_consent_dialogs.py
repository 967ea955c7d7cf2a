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
