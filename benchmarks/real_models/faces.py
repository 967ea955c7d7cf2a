"""Face / not-face crops for MTCNN's stages (PNet 12x12, RNet 24x24, ONet 48x48), from images that
packages ship: scikit-image's `lfw_subset` (100 LFW face crops and 100 non-face patches, 25x25 grey),
the two faces in skimage's `astronaut` and `camera` (boxes found with skimage's own LBP face cascade),
and non-face patches of skimage's and scikit-learn's sample photos (a cat's face among them).

Labels are MTCNN's class ids: 1 = face, 0 = not a face (index 1 of its softmax is the face score).
Inputs are normalised as facenet-pytorch's detect_face does: (pixel - 127.5) / 128, RGB, N x 3 x S x S.
"""

from __future__ import annotations

import numpy as np

# (row, col, size) of the faces, from skimage.feature.Cascade(data.lbp_frontal_face_cascade_filename())
FACE_BOXES = {"astronaut": (62, 187, 97), "camera": (124, 207, 56)}
NONFACE_IMAGES = ("coffee", "chelsea", "rocket", "retina", "hubble_deep_field", "brick", "grass")


def _rgb(img):
    img = np.asarray(img, dtype=np.float32)
    if img.max() <= 1.0:
        img = img * 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def _resize(img, size):
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    # area-like downscaling, as MTCNN's own imresample (interpolate mode "area")
    t = F.interpolate(t, size=(size, size), mode="area" if t.shape[-1] >= size else "bilinear",
                      align_corners=None if t.shape[-1] >= size else False)
    return t[0].numpy()


def _norm(x):
    return ((x - 127.5) * 0.0078125).astype(np.float32)


def _jitter_box(rng, r, c, s, h, w, amount=0.12):
    s2 = int(round(s * rng.uniform(1 - amount, 1 + amount)))
    r2 = int(round(r + rng.uniform(-amount, amount) * s))
    c2 = int(round(c + rng.uniform(-amount, amount) * s))
    r2, c2 = min(max(r2, 0), h - s2), min(max(c2, 0), w - s2)
    return r2, c2, s2


def make_crops(size: int, seed: int = 0):
    """(crops N x 3 x size x size float32 normalised, labels N int64, source tag per crop)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    crops, labels, tags = [], [], []

    def add(img, label, tag, flip=False, gain=1.0, noise=0.0):
        a = _resize(_rgb(img), size)
        if flip:
            a = a[:, :, ::-1]
        a = np.clip((a - 128.0) * gain + 128.0 + rng.normal(0, noise, a.shape), 0, 255)
        crops.append(_norm(a))
        labels.append(label)
        tags.append(tag)

    lfw = data.lfw_subset()  # 100 faces then 100 non-faces, 25x25 in [0, 1]
    for i, img in enumerate(lfw):
        label = 1 if i < 100 else 0
        add(img, label, f"lfw{i}")
        # a second view: mirrored, other contrast, a little sensor noise
        add(img, label, f"lfw{i}-b", flip=True, gain=rng.uniform(0.7, 1.2), noise=rng.uniform(0, 6))
    for name, (r, c, s) in FACE_BOXES.items():
        img = _rgb(getattr(data, name)())
        for k in range(16):
            r2, c2, s2 = _jitter_box(rng, r, c, s, *img.shape[:2])
            add(img[r2:r2 + s2, c2:c2 + s2], 1, f"{name}{k}", flip=bool(k % 2), gain=rng.uniform(0.8, 1.1))
    photos = [_rgb(getattr(data, n)()) for n in NONFACE_IMAGES] + [_rgb(i) for i in load_sample_images().images]
    for k in range(96):
        img = photos[k % len(photos)]
        h, w = img.shape[:2]
        s = int(rng.uniform(0.08, 0.5) * min(h, w))
        r, c = rng.integers(0, h - s), rng.integers(0, w - s)
        add(img[r:r + s, c:c + s], 0, f"photo{k % len(photos)}-{k}", flip=bool(rng.integers(2)))
    return np.stack(crops), np.array(labels, dtype=np.int64), tags


def split(size: int, n_calib: int, n_eval: int, seed: int = 0):
    """Disjoint calibration and evaluation sets, each with faces and non-faces mixed in a fixed order."""
    x, y, _ = make_crops(size, seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(x))
    assert n_calib + n_eval <= len(x), (n_calib, n_eval, len(x))
    c, e = order[:n_calib], order[n_calib:n_calib + n_eval]
    return x[c], y[c], x[e], y[e]
