"""Retrain the bundled demo model deterministically.

    python resources/demo/train_demo.py

Writes digits_cnn.pt (state_dict) and digits_split.npz (x_calib, y_calib, x_eval, y_eval) beside
this file. Needs scikit-learn (for its bundled digits data set; no network). Pixels are scaled to
[0, 1]; the split is stratified with a fixed seed, so the same files come out every time on one
machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from qtapp.core.base.demo import DATA_FILE, WEIGHTS_FILE, build_model

SEED = 0
HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=400, stratify=y, random_state=SEED)
    # Calibration draws from the training distribution, never from the held-out evaluation split.
    x_calib, y_calib = x_train[:256], y_train[:256]

    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(30):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean()
    print(f"held-out accuracy: {acc:.4f} on {len(y_eval)} samples")
    if acc < 0.95:
        raise SystemExit("demo model below 95% held-out accuracy; not writing it")
    torch.save(model.state_dict(), HERE / WEIGHTS_FILE)
    np.savez_compressed(HERE / DATA_FILE, x_calib=x_calib, y_calib=y_calib, x_eval=x_eval, y_eval=y_eval)
    print(f"wrote {HERE / WEIGHTS_FILE} and {HERE / DATA_FILE}")


if __name__ == "__main__":
    main()
