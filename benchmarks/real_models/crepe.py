"""CREPE pitch estimator (torchcrepe 0.0.24, MIT; the weights are the CREPE authors' Keras release
converted by torchcrepe), capacity "tiny" by default (`--kwargs '{"capacity": "full"}'` for the
22M-parameter model, about 16x the compute).

Covers: a 1-D CNN read as 2-D convolutions with very long kernels (512 and 64 taps), ReLU *before*
BatchNorm (so BatchNorm cannot fold into the conv), max pooling, a sigmoid head of 360 pitch bins of
20 cents; the task is a regression: the pitch in Hz decoded from the bins (CREPE's local weighted
average) against the true f0 of the frame.

Input: one frame of 1024 samples at 16 kHz, zero mean and unit variance (torchcrepe.preprocess does
this before the model). Output: N x 360 salience (the main and only output).

Data (no recordings here, nothing downloaded): synthetic voiced frames at a known f0, log-uniform
between 50 and 1000 Hz: pure sines, harmonic complexes with random spectral tilt and phases (voice- and
instrument-like), some with a formant-like resonance, a slight vibrato, and white or pink noise at 0 to
35 dB SNR. y = the true f0 in Hz at the frame's centre.

torchcrepe imports torchaudio at the top only to read audio files; torchaudio pins an exact torch
version (installing it would replace torch 2.14.1), so it is stubbed when missing, and torchcrepe is
installed with `pip install --no-deps torchcrepe==0.0.24` (its real needs: librosa, resampy, scipy).
"""

from __future__ import annotations

import numpy as np
import rm_common
import torch
from torch import nn

SR = 16000
WINDOW = 1024
INFO = {
    "name": "crepe",
    "package": "torchcrepe==0.0.24 (--no-deps; torchaudio stubbed)",
    "weights": "torchcrepe/assets/tiny.pth (1.9 MB; full.pth 89 MB)",
    "licence": "MIT (torchcrepe; CREPE weights MIT)",
    "covers": "1-D CNN (long kernels, ReLU before BatchNorm); regression: pitch in Hz",
    "metric": "task_metrics.py:pitch_rpa50",
    "metric_fn": "pitch_rpa50",
    "target": "drop<=0.02",  # at most 2 points of raw pitch accuracy (within 50 cents) lost
    "batch_size": 64, "calib_batches": 2,  # 128 calibration frames; evaluation 256
    "methods": ["static"],
}


class CrepeSalience(nn.Module):
    """torchcrepe.Crepe with the packaged weights: frames N x 1024 -> salience N x 360."""

    def __init__(self, capacity: str = "tiny"):
        super().__init__()
        rm_common.stub_module("torchaudio", "torchcrepe imports it only to load audio files")
        from torchcrepe.model import Crepe

        self.crepe = Crepe(capacity)
        state = torch.load(rm_common.package_file("torchcrepe", f"assets/{capacity}.pth"), map_location="cpu",
                           weights_only=True)
        self.crepe.load_state_dict(state)
        self.crepe.eval()

    def forward(self, frames):
        return self.crepe(frames)


def build(capacity: str = "tiny"):
    model = CrepeSalience(capacity).eval()
    model.example_input_shape = (1, WINDOW)
    return model


def _pink(rng, n):
    white = rng.normal(size=n)
    spec = np.fft.rfft(white)
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    return np.fft.irfft(spec, n)


def synth_frames(n: int, seed: int):
    """n frames (N x 1024, normalised as torchcrepe does) and their true f0 in Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / SR
    centre = t[WINDOW // 2]
    frames, f0s = [], []
    for i in range(n):
        f0 = float(np.exp(rng.uniform(np.log(50.0), np.log(1000.0))))
        kind = rng.choice(["sine", "harmonic", "harmonic", "formant"])
        # slight vibrato (+-30 cents at 4-7 Hz): the true f0 is the one at the frame centre
        depth = rng.uniform(0, 30) / 1200.0
        rate, ph_v = rng.uniform(4, 7), rng.uniform(0, 2 * np.pi)
        inst = f0 * 2.0 ** (depth * np.sin(2 * np.pi * rate * (t - centre) + ph_v))
        f_true = f0 * 2.0 ** (depth * np.sin(ph_v))
        phase = 2 * np.pi * np.cumsum(inst) / SR
        phase -= phase[WINDOW // 2]
        if kind == "sine":
            x = np.sin(phase + rng.uniform(0, 2 * np.pi))
        else:
            n_h = max(1, int(min(7500.0, 40 * f0) // f0))
            tilt = rng.uniform(0.5, 2.0)
            amps = 1.0 / np.arange(1, n_h + 1) ** tilt * rng.uniform(0.5, 1.0, n_h)
            if kind == "formant":  # a vowel-like resonance boosting harmonics near F1/F2
                f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
                hz = f0 * np.arange(1, n_h + 1)
                amps *= 1 + 4 * np.exp(-((hz - f1) / 120) ** 2) + 3 * np.exp(-((hz - f2) / 200) ** 2)
            x = sum(a * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k, a in zip(range(1, n_h + 1), amps))
        x = x / (np.std(x) + 1e-9)
        snr = rng.uniform(0, 35)
        noise = rng.normal(size=WINDOW) if rng.random() < 0.5 else _pink(rng, WINDOW)
        x = x + noise / (np.std(noise) + 1e-9) * 10 ** (-snr / 20)
        x = x - x.mean()
        x = x / max(x.std(), 1e-10)
        frames.append(x.astype(np.float32))
        f0s.append(f_true)
    return np.stack(frames), np.array(f0s, dtype=np.float32)


def make_data(out_dir, quick: bool = False) -> dict:
    bs = INFO["batch_size"]
    xc, yc = synth_frames(bs * INFO["calib_batches"], seed=1)
    xe, ye = synth_frames(4 * bs, seed=2)
    return rm_common.write_split(out_dir, INFO["name"], xc, xe, ye)


if __name__ == "__main__":
    rm_common.data_cli(make_data, build)
