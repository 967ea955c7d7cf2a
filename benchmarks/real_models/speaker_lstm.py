"""Resemblyzer's voice encoder (resemblyzer 0.1.4, Apache-2.0; weights `resemblyzer/pretrained.pt`,
trained by Resemble AI on LibriSpeech, VoxCeleb 1 and 2): a speaker-verification d-vector network, a
3-layer LSTM (40 mel bands in, 256 hidden) whose last hidden state goes through Linear + ReLU and is
L2-normalised into a 256-d speaker embedding.

Covers: a recurrent model (nn.LSTM, 3 layers, 160 time steps) with an embedding output; the task is
speaker retrieval: is an utterance's nearest other utterance (cosine) one of the same speaker.

Input: N x 160 x 40 mel frames (1.6 s, resemblyzer's partial-utterance window), made by resemblyzer's
own `wav_to_mel_spectrogram` after its volume normalisation. Data (nothing downloaded): speech-like
synthetic utterances from a source-filter model: a glottal pulse train at each speaker's own f0 range,
jitter and breathiness, through formant resonators for a random sequence of vowels scaled by the
speaker's vocal tract length, with fricative bursts and short pauses; y = the speaker id.

resemblyzer lists `typing` (the Python 2 backport, which breaks pip on Python 3.7+) and `webrtcvad`
(built from source) as requirements: install it with `pip install --no-deps resemblyzer==0.1.4` and
`pip install webrtcvad-wheels librosa` (the bench extra has them).
"""

from __future__ import annotations

import numpy as np
import rm_common
import torch
from torch import nn

SR = 16000
FRAMES = 160
INFO = {
    "name": "speaker_lstm",
    "package": "resemblyzer==0.1.4 (--no-deps) + webrtcvad-wheels, librosa",
    "weights": "resemblyzer/pretrained.pt (17 MB)",
    "licence": "Apache-2.0 (code and weights, Resemble AI)",
    "covers": "recurrent: 3-layer LSTM, 160 steps; speaker embedding output (256-d, L2-normalised)",
    "metric": "task_metrics.py:pair_retrieval_at1",
    "metric_fn": "pair_retrieval_at1",
    "target": "drop<=0.03",  # at most 3 points of speaker retrieval@1 lost
    "batch_size": 24, "calib_batches": 2,  # 48 calibration utterances; evaluation 96 = 12 speakers x 8
    "methods": ["static", "dynamic"],
}

VOWELS = {  # F1, F2, F3 of an adult male voice (Peterson & Barney)
    "a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
    "o": (570, 840, 2410), "ae": (660, 1720, 2410), "er": (490, 1350, 1690), "uh": (520, 1190, 2390),
}


class VoiceEmbedding(nn.Module):
    """resemblyzer.VoiceEncoder on the CPU: mels N x 160 x 40 -> embeddings N x 256."""

    def __init__(self):
        super().__init__()
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device="cpu", verbose=False).eval()

    def forward(self, mels):
        return self.encoder(mels)


def build():
    model = VoiceEmbedding().eval()
    model.example_input_shape = (1, FRAMES, 40)
    return model


def speakers(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        female = k % 2 == 1
        out.append({
            "f0": rng.uniform(165, 240) if female else rng.uniform(85, 140),
            "f0_range": rng.uniform(0.08, 0.25),  # intonation, relative
            "tract": rng.uniform(1.1, 1.25) if female else rng.uniform(0.88, 1.05),  # formant scale
            "tilt": rng.uniform(0.90, 0.98),  # glottal low-pass pole: voice brightness
            "breath": rng.uniform(0.01, 0.15),
            "jitter": rng.uniform(0.002, 0.02),
            "bw": rng.uniform(50, 110),  # formant bandwidth
            "rate": rng.uniform(3.0, 6.0),  # syllables per second
            "vowels": rng.permutation(list(VOWELS))[:5].tolist(),  # a speaker's favourite vowels (accent)
        })
    return out


def _resonator(x, f, bw):
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / SR)
    a = [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r]
    return lfilter([1 - r], a, x)


def utterance(spk: dict, rng, seconds: float = 1.75):
    from scipy.signal import lfilter

    n = int(seconds * SR)
    wav = np.zeros(n)
    pos = int(rng.uniform(0, 0.05) * SR)
    while pos < n:
        syl = int(SR / spk["rate"] * rng.uniform(0.7, 1.3))
        voiced = int(syl * rng.uniform(0.55, 0.8))
        # a consonant: fricative noise (s/sh/f-like band) or a plosive gap
        cons = int(syl * rng.uniform(0.1, 0.25))
        if rng.random() < 0.6:
            centre = rng.choice([2500, 4000, 6000]) * spk["tract"]
            burst = _resonator(rng.normal(size=cons), min(centre, 7500), 1200) * rng.uniform(0.05, 0.3)
            wav[pos:pos + cons] += burst[: max(0, min(cons, n - pos))]
        pos += cons
        if pos >= n:
            break
        # a vowel: pulse train at a gliding f0, glottal low-pass, formants, aspiration
        m = min(voiced, n - pos)
        f0 = spk["f0"] * (1 + spk["f0_range"] * rng.uniform(-1, 1)) * np.linspace(1, rng.uniform(0.85, 1.15), m)
        f0 *= 1 + spk["jitter"] * rng.normal(size=m)
        phase = np.cumsum(f0) / SR
        pulses = np.diff(np.floor(phase), prepend=0.0)
        src = lfilter([1.0], [1, -spk["tilt"]], lfilter([1.0], [1, -spk["tilt"]], pulses))
        src = src / (np.abs(src).max() + 1e-9) + spk["breath"] * rng.normal(size=m)
        v = VOWELS[rng.choice(spk["vowels"]) if rng.random() < 0.8 else rng.choice(list(VOWELS))]
        seg = sum(_resonator(src, f * spk["tract"] * rng.uniform(0.95, 1.05), spk["bw"] * (1 + i)) * g
                  for i, (f, g) in enumerate(zip(v, (1.0, 0.6, 0.3))))
        env = np.minimum(1, np.minimum(np.arange(m), np.arange(m)[::-1]) / (0.015 * SR))
        wav[pos:pos + m] += seg * env / (np.abs(seg).max() + 1e-9)
        pos += m + int(syl * rng.uniform(0.0, 0.15))  # short pause
    wav += 0.003 * rng.normal(size=n)  # room noise
    return wav.astype(np.float32)


def mels_of(wav):
    from resemblyzer import audio
    from resemblyzer.hparams import audio_norm_target_dBFS

    wav = audio.normalize_volume(wav, audio_norm_target_dBFS, increase_only=True)
    mel = audio.wav_to_mel_spectrogram(wav)
    return mel[:FRAMES]


def make_set(spks, per_speaker: int, seed: int):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for u in range(per_speaker):
        for k, spk in enumerate(spks):  # interleaved: every batch holds every speaker
            xs.append(mels_of(utterance(spk, rng)))
            ys.append(k)
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64)


def make_data(out_dir, quick: bool = False) -> dict:
    bs = INFO["batch_size"]
    spks = speakers(12, seed=7)
    xc, yc = make_set(spks, bs * INFO["calib_batches"] // len(spks), seed=8)
    xe, ye = make_set(spks, 4 * bs // len(spks), seed=9)
    return rm_common.write_split(out_dir, INFO["name"], xc, xe, ye)


if __name__ == "__main__":
    rm_common.data_cli(make_data, build)
