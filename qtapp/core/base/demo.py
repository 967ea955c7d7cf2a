"""The bundled demo: a small CNN trained on scikit-learn's 8x8 digits.

Its trained weights and its calibration / held-out evaluation split ship in `resources/demo/`
(installed as `qtapp.resources.demo`); `resources/demo/train_demo.py` retrains them deterministically.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

INPUT_SHAPE = (1, 1, 8, 8)
WEIGHTS_FILE = "digits_cnn.pt"
DATA_FILE = "digits_split.npz"


def resource_dir() -> Path:
    return Path(str(resources.files("qtapp.resources.demo")))


def build_model():
    """The demo architecture: three conv+BN+ReLU blocks and two linear layers."""
    import torch.nn as nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block1 = block(1, 32)
            self.block2 = block(32, 64)
            self.pool = nn.MaxPool2d(2)
            self.block3 = block(64, 128)
            self.gap = nn.AdaptiveAvgPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(128 * 2 * 2, 512)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(512, 10)

        def forward(self, x):
            x = self.pool(self.block2(self.block1(x)))
            x = self.gap(self.block3(x))
            return self.fc2(self.relu(self.fc1(self.flatten(x))))

    return DigitsCNN()


def load_model():
    import torch

    model = build_model()
    state = torch.load(resource_dir() / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def load_split(name: str):
    """`name` is "calib" or "eval"; returns (x float32 N x 1 x 8 x 8, y int64 N) as torch tensors."""
    import numpy as np
    import torch

    with np.load(resource_dir() / DATA_FILE) as data:
        return torch.from_numpy(data[f"x_{name}"]), torch.from_numpy(data[f"y_{name}"])
