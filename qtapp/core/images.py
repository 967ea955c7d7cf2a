"""Image folders as data: torchvision's ImageFolder scan and transforms.v2 preprocessing.

Class folders directly under the root give labels (ImageFolder's class ids: sorted folder names); a root
that holds images itself is read without labels. Only regular files are opened (a FIFO would block).
An image that cannot be decoded, or that is larger than PIL's decompression-bomb limit, is skipped,
counted and named in the source's notes: one bad file does not abort a calibration run.
"""

from __future__ import annotations

import itertools
import os
import stat
import warnings
from pathlib import Path

from .data import DataSource
from .errors import QtappError, UsageError
from .inputs import InputSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def open_image_folder(root: Path, spec: InputSpec, batch_size: int, max_batches: int, preprocess,
                      preset=None) -> DataSource:
    if len(spec.shapes) != 1 or len(spec.sample_shape) != 3:
        raise UsageError(f"image folders need an image input (C,H,W); the model's input is {spec}")
    if not spec.is_float:
        raise QtappError(f"{root} is an image folder: it gives float pixels, but the model takes {spec.dtype} "
                         "inputs; give a tensor file of ids instead")
    channels = spec.sample_shape[0]
    if channels not in (1, 3):
        raise UsageError(f"image folders give 1 (grayscale) or 3 (RGB) channels; the model's input has {channels}")
    transform, described, notes = image_transform(spec, preprocess, preset)
    described += "".join(f" ({n})" for n in notes)
    candidates, classes, skipped = _scan(root)
    mode = "L" if channels == 1 else "RGB"
    chosen, considered = [], len(skipped)
    for path, target in candidates:
        if len(chosen) == batch_size * max_batches:
            break
        considered += 1
        reason = _decode(path, mode)[1]  # decoded once up front: n_batches and skipped are known before use
        if reason:
            skipped.append(f"{path}: {reason}")
        else:
            chosen.append((path, target))
    if not chosen:
        if skipped:
            raise QtappError(f"no readable images under {root}: {'; '.join(skipped[:3])}"
                             + (f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""))
        raise QtappError(f"no images found under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if skipped:
        shown = ", ".join(f"{Path(s.split(': ', 1)[0]).name} ({s.split(': ', 1)[1]})" for s in skipped[:3])
        notes.append(f"skipped {len(skipped)} of {considered} images in {root} that could not be used: {shown}"
                     + (" ..." if len(skipped) > 3 else ""))

    def batches():
        import torch

        for i in range(0, len(chosen), batch_size):
            chunk = chosen[i : i + batch_size]
            x = torch.stack([transform(read_image(p, mode)) for p, _ in chunk]).to(getattr(torch, spec.dtype))
            y = torch.tensor([t for _, t in chunk]) if classes else None
            yield (x,), y

    desc = f"image folder {root}" + (f" ({len(classes)} classes)" if classes else "")
    label_max = max(t for _, t in chosen) if classes else None
    return DataSource(desc, "folder", True, -(-len(chosen) // batch_size), len(chosen), bool(classes), batches,
                      label_max=label_max, dtype=spec.dtype, preprocessing=described, skipped=skipped, notes=notes)


def _scan(root: Path):
    """(candidates [(path, class id)] taking the classes in turn, class names or None, skipped files)."""
    from torchvision.datasets import ImageFolder

    skipped: list[str] = []

    def is_valid_file(p: str) -> bool:
        if Path(p).suffix.lower() not in IMAGE_SUFFIXES:
            return False
        try:
            mode = os.stat(p).st_mode  # stat, never open: a FIFO would block the reader
        except OSError as exc:
            skipped.append(f"{p}: {exc.strerror}")
            return False
        if not stat.S_ISREG(mode):
            skipped.append(f"{p}: not a regular file (a FIFO, socket or device)")
            return False
        return True

    class Unlabelled(ImageFolder):
        """Every image under the root, recursively, as one class ''."""

        def find_classes(self, directory):
            return [""], {"": 0}

    with os.scandir(root) as entries:
        top = [e for e in entries if e.is_dir() or Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
    labelled = bool(top) and all(e.is_dir() for e in top)
    try:
        dataset = (ImageFolder if labelled else Unlabelled)(str(root), is_valid_file=is_valid_file,
                                                             allow_empty=True)
    except OSError as exc:
        raise QtappError(f"cannot scan image folder {root}: {exc}") from None
    samples = [(Path(p), t) for p, t in dataset.samples]
    if not labelled:
        return samples, None, skipped
    # Take the classes in turn, so that a capped read (a few calibration batches of an ImageNet-style
    # folder) sees every class rather than the first class's files only.
    by_class: dict[int, list] = {}
    for item in samples:
        by_class.setdefault(item[1], []).append(item)
    turns = itertools.zip_longest(*by_class.values())
    return [item for group in turns for item in group if item is not None], dataset.classes, skipped


def read_image(path: Path, mode: str):
    image, reason = _decode(path, mode)
    if reason:
        raise QtappError(f"cannot use image {path}: {reason}")
    return image


def _decode(path: Path, mode: str):
    """(image, None), or (None, why not): an image over PIL's decompression-bomb limit is refused, not warned of."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                return img.convert(mode), None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return None, f"too large ({exc})"
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ... for bad files
            return None, f"cannot be read ({type(exc).__name__}: {exc})"


def image_transform(spec: InputSpec, preprocess, preset=None):
    """(transform PIL image -> C,H,W float tensor, description, notes)."""
    import torch
    from torchvision.transforms import v2

    c, h, w = spec.sample_shape
    notes: list[str] = []
    if preprocess == "auto" and preset is not None:
        name, transform = preset
        crop = list(getattr(transform, "crop_size", []))
        crop = crop * 2 if len(crop) == 1 else crop
        if c == 3 and crop == [h, w]:
            return transform, _describe_preset(name, transform), notes
        notes.append(f"not {name}'s preset: it crops to {'x'.join(map(str, crop))}, the model's input is {h}x{w}")
    if preprocess == "auto":
        preprocess = "imagenet" if (c, h, w) == (3, 224, 224) else {"size": [h, w]}
    scale = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if preprocess == "imagenet":
        short = 256 * h // 224
        steps = [v2.Resize(short), v2.CenterCrop((h, w)), *scale, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        crop = h if h == w else f"{h}x{w}"
        described = f"resize {short} (short side, bilinear), centre-crop {crop}, scale to [0, 1], ImageNet mean/std"
    elif preprocess == "none":
        steps = [v2.Resize((h, w)), *scale]
        described = f"resize to {h}x{w} (bilinear), scale to [0, 1]"
    else:
        size = list(preprocess.get("size") or [h, w])
        mean = list(preprocess.get("mean", [0.0] * c))
        std = list(preprocess.get("std", [1.0] * c))
        if len(mean) != c or len(std) != c:
            raise UsageError(f"preprocess mean/std need {c} values, one per input channel")
        steps = [v2.Resize(size)] + ([v2.CenterCrop((h, w))] if size != [h, w] else []) + scale
        described = f"resize to {size[0]}x{size[1]} (bilinear)" + (
            f", centre-crop {h}x{w}" if size != [h, w] else "") + ", scale to [0, 1]"
        if "mean" in preprocess or "std" in preprocess:
            steps.append(v2.Normalize(mean, std))
            described += f", mean {mean} std {std}"
    return v2.Compose(steps), described, notes


def _describe_preset(name: str, transform) -> str:
    resize = getattr(transform, "resize_size", None)
    interp = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    crop = getattr(transform, "crop_size", None)
    mean, std = tuple(getattr(transform, "mean", ())), tuple(getattr(transform, "std", ()))
    norm = "ImageNet mean/std" if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD) else f"mean {list(mean)} std {list(std)}"
    return (f"{name} preset: resize {resize[0] if resize else '-'} (short side, {interp}), "
            f"centre-crop {crop[0] if crop else '-'}, scale to [0, 1], {norm}")
