"""Calibration and evaluation data: the demo split, random tensors, an image folder or a tensor file.

`open_source()` checks the source up front (it exists, is not empty, its items fit the model's input)
and returns a `DataSource`: a re-iterable of (x, y-or-None) batches with the facts a report needs.
Bad items raise a `QtappError` that names the file.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import demo
from .errors import QtappError, UsageError
from .inputs import InputSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif"}
TENSOR_SUFFIXES = {".npy", ".npz", ".pt", ".pth"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataSource:
    description: str
    kind: str  # demo | random | folder | tensor
    representative: bool
    n_batches: int
    samples: int
    has_labels: bool
    _batches: Callable[[], Iterator[tuple]]

    def __iter__(self):
        return self._batches()

    def __len__(self) -> int:
        return self.n_batches


def open_source(source: str, input_spec: InputSpec | None, batch_size: int, max_batches: int,
                preprocess="auto", split: str = "calib", seed: int = 0) -> DataSource:
    """`split` picks the demo's calibration or evaluation split; `seed` varies random data."""
    if input_spec is None:
        raise UsageError("the model's input shape is unknown: give it with --input-shape, e.g. 1,3,224,224")
    if source == "demo":
        x, y = demo.load_split(split)
        _check_sample_shape(tuple(x.shape[1:]), input_spec, "the demo data")
        return _from_tensors(f"demo {split} split", "demo", x, y, batch_size, max_batches, True)
    if source == "random":
        return _random(input_spec, batch_size, max_batches, seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise QtappError(f"data source not found: {path} (use demo, random, an image folder or a "
                         ".npy/.npz/.pt file)")
    if path.is_dir():
        return _image_folder(path, input_spec, batch_size, max_batches, preprocess)
    if path.suffix.lower() in TENSOR_SUFFIXES:
        x, y = _read_tensor_file(path)
        _check_sample_shape(tuple(x.shape[1:]), input_spec, str(path))
        return _from_tensors(str(path), "tensor", x, y, batch_size, max_batches, True)
    raise QtappError(f"cannot use {path} as data: expected a folder of images or a .npy/.npz/.pt file")


def _check_sample_shape(shape: tuple, spec: InputSpec, what: str) -> None:
    if shape != spec.sample_shape:
        expected = "x".join(str(d) for d in ("N", *spec.sample_shape))
        got = "x".join(str(d) for d in ("N", *shape))
        raise QtappError(f"{what} holds samples of shape {got}, but the model's input is {expected} "
                         f"(input spec {spec}). Fix the data or give --input-shape.")


def _from_tensors(desc, kind, x, y, batch_size, max_batches, representative) -> DataSource:
    import torch

    n = min(len(x), batch_size * max_batches)
    if n == 0:
        raise QtappError(f"{desc} is empty: calibration needs at least one sample")
    x = x[:n].float() if x.dtype.is_floating_point or x.dtype == torch.uint8 else x[:n]
    y = y[:n] if y is not None else None

    def batches():
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size], (y[i : i + batch_size] if y is not None else None)

    return DataSource(desc, kind, representative, -(-n // batch_size), n, y is not None, batches)


def _random(spec: InputSpec, batch_size: int, max_batches: int, seed: int) -> DataSource:
    def batches():
        for i in range(max_batches):
            yield spec.example(batch=batch_size, seed=seed * 100003 + i)[0], None

    return DataSource(f"random normal tensors (seed {seed})", "random", False, max_batches,
                      batch_size * max_batches, False, batches)


def _read_tensor_file(path: Path):
    import numpy as np
    import torch

    suffix = path.suffix.lower()  # open_source accepts any case: CALIB.NPY is a .npy file
    try:
        if suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "x" not in data:
                    raise QtappError(f"{path} has no array named 'x' (found: {', '.join(data.files)})")
                y = torch.from_numpy(data["y"]) if "y" in data else None
                return torch.from_numpy(data["x"]), y
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except QtappError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets a message naming it
        raise QtappError(f"cannot read tensor file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, dict) and isinstance(obj.get("x"), torch.Tensor):
        return obj["x"], obj.get("y")
    raise QtappError(f"{path} must hold a tensor or a dict with tensor 'x' (and optional 'y')")


def _image_folder(root: Path, spec: InputSpec, batch_size: int, max_batches: int, preprocess) -> DataSource:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise QtappError(f"no images found under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    # ImageFolder layout: every image sits in a class folder directly under root.
    classes = sorted({p.parent.name for p in files}) if all(p.parent.parent == root for p in files) else None
    if classes:
        # Take the classes in turn, so that a capped read (a few calibration batches of an ImageNet-style
        # folder) sees every class rather than the first class's files only.
        by_class: dict[str, list[Path]] = {}
        for p in files:
            by_class.setdefault(p.parent.name, []).append(p)
        files = [p for group in itertools.zip_longest(*(by_class[c] for c in classes)) for p in group if p is not None]
    files = files[: batch_size * max_batches]
    transform = _image_transform(spec, preprocess)

    def batches():
        import torch

        for i in range(0, len(files), batch_size):
            chunk = files[i : i + batch_size]
            x = torch.stack([transform(_read_image(p, spec.sample_shape[0]), p) for p in chunk])
            y = torch.tensor([classes.index(p.parent.name) for p in chunk]) if classes else None
            yield x, y

    desc = f"image folder {root}" + (f" ({len(classes)} classes)" if classes else "")
    return DataSource(desc, "folder", True, -(-len(files) // batch_size), len(files), classes is not None, batches)


def _read_image(path: Path, channels: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise QtappError(f"cannot read image {path}: {exc}") from None


def _image_transform(spec: InputSpec, preprocess):
    import numpy as np
    import torch
    from PIL import Image

    if len(spec.sample_shape) != 3:
        raise UsageError(f"image folders need an image input (C,H,W); the model's input is {spec}")
    c, h, w = spec.sample_shape
    if preprocess == "auto":
        preprocess = "imagenet" if (c, h, w) == (3, 224, 224) else {"size": [h, w]}
    if preprocess == "imagenet":
        resize, mean, std = 256 * h // 224, IMAGENET_MEAN, IMAGENET_STD
    elif preprocess == "none":
        resize, mean, std = None, (0.0,) * c, (1.0,) * c
    else:
        resize = None
        mean = tuple(preprocess.get("mean", (0.0,) * c))
        std = tuple(preprocess.get("std", (1.0,) * c))
        if len(mean) != c or len(std) != c:
            raise UsageError(f"preprocess mean/std need {c} values, one per input channel")
    mean_t = torch.tensor(mean).view(c, 1, 1)
    std_t = torch.tensor(std).view(c, 1, 1)

    def transform(img, path):
        if resize:  # ImageNet: resize the short side, then centre-crop
            scale = resize / min(img.size)
            img = img.resize((max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))), Image.BILINEAR)
            left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).view(h, w, -1).permute(2, 0, 1)
        return (t - mean_t) / std_t

    return transform
