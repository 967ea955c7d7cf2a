"""Image folders as data: a folder scan with torchvision ImageFolder's labels, and transforms.v2 preprocessing.

Class folders directly under the root give labels (ImageFolder's class ids: sorted folder names); a root
that holds images itself is read without labels. Only regular files are opened (a FIFO would block).
Linked folders are followed, but no folder is entered twice on one scan, so a link back up (a/l1 -> ..)
does not walk forever; the links left out are said in the notes.

Pixels: 8-bit images are scaled v/255 to [0, 1] by the transform. Images PIL keeps in one channel of more
than 8 bits are scaled here, to a float ("F") image, so that they land where their 8-bit version would:
- 16-bit ("I;16": 16-bit grayscale PNG, TIFF) v -> v/65535;
- 32-bit integer ("I": 16-bit PGM, signed 16-bit or 32-bit TIFF) the same, if all values are in 0..65535;
  other values have no known scale, and the image is skipped, naming its range;
- float ("F": float TIFF, PFM) is taken as already in [0, 1] if it is; otherwise (or NaN/inf) skipped.
48-bit RGB PNGs and TIFFs need nothing here: PIL reads them as 8-bit RGB (the high byte of each value).

Size: an image over PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, about 89 MP) is decoded
downscaled (a JPEG at 1/2..1/8 scale by its decoder, others reduced after decoding) to a short side of
twice what the preprocessing resizes to, and said in the notes. Refused, as too large to decode safely:
more than 2 * MAX_DECODE_PIXELS (about 1.07 gigapixels) whatever the format, or a decode (after a JPEG's
reduced-scale decoding) of more than MAX_DECODE_PIXELS (2**29, 2 GiB at PIL's 4 bytes a pixel).
An image that cannot be used is skipped, counted and named in the source's notes: one bad file does not
abort a calibration run.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import stat
import threading
import warnings
from collections import Counter
from pathlib import Path

from ..base.errors import QtappError, UsageError
from ..base.inputs import InputSpec
from .source import DataSource

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The most pixels one image's decode may produce: PIL keeps RGB, RGBA, I and F images at 4 bytes a pixel, so
# 2**29 pixels is 2 GiB (a palette or 16-bit image, converted before it is reduced, peaks at 2.5 or 3 GiB).
# Headers over twice this (about 1.07 gigapixels) are refused before anything is decoded, even a JPEG's.
MAX_DECODE_PIXELS = 2**29
# PIL's pixel limit is a module global: this lock orders the reads of it and the one place that lifts it.
_PIL_LIMIT = threading.Lock()


def open_image_folder(root: Path, spec: InputSpec, batch_size: int, max_batches: int, preprocess,
                      preset=None) -> DataSource:
    from PIL import Image

    if len(spec.shapes) != 1 or len(spec.sample_shape) != 3:
        raise UsageError(f"image folders need an image input (C,H,W); the model's input is {spec}")
    if not spec.is_float:
        raise QtappError(f"{root} is an image folder: it gives float pixels, but the model takes {spec.dtype} "
                         "inputs; give a tensor file of ids instead")
    channels = spec.sample_shape[0]
    if channels not in (1, 3):
        raise UsageError(f"image folders give 1 (grayscale) or 3 (RGB) channels; the model's input has {channels}")
    transform, described, notes, need = image_transform(spec, preprocess, preset)
    described += "".join(f" ({n})" for n in notes)
    candidates, classes, skipped, scan_notes = _scan(root)
    notes += scan_notes
    mode = "L" if channels == 1 else "RGB"
    chosen, considered, done = [], len(skipped), Counter()
    for path, target in candidates:
        if len(chosen) == batch_size * max_batches:
            break
        considered += 1
        _, reason, how = _decode(path, mode, need)  # decoded once up front: n_batches and skipped are known before use
        if reason:
            skipped.append(f"{path}: {reason}")
        else:
            chosen.append((path, target))
            done.update(how)
    if not chosen:
        if skipped:
            raise QtappError(f"no readable images under {root}: {'; '.join(skipped[:3])}"
                             + (f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""))
        raise QtappError(f"no images found under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if skipped:
        shown = ", ".join(f"{Path(s.split(': ', 1)[0]).name} ({s.split(': ', 1)[1]})" for s in skipped[:3])
        notes.append(f"skipped {len(skipped)} of {considered} images in {root} that could not be used: {shown}"
                     + (" ..." if len(skipped) > 3 else ""))
    if done["downscaled"]:
        with _PIL_LIMIT:
            limit = Image.MAX_IMAGE_PIXELS
        over = MAX_DECODE_PIXELS if limit is None else min(limit, MAX_DECODE_PIXELS)
        notes.append(f"downscaled {_count(done['downscaled'], 'image')} over {_pixels(over)} before preprocessing "
                     f"(PIL's decompression-bomb limit), keeping a short side of at least {2 * need} pixels")
    if done["16-bit"]:
        notes.append(f"{_count(done['16-bit'], '16-bit image')} scaled from 0..65535 to [0, 1]")
    if done["float"]:
        notes.append(f"{_count(done['float'], 'float image')} with pixels in [0, 1] read unscaled")

    def batches():
        import torch

        for i in range(0, len(chosen), batch_size):
            chunk = chosen[i : i + batch_size]
            x = torch.stack([transform(read_image(p, mode, need)) for p, _ in chunk]).to(getattr(torch, spec.dtype))
            y = torch.tensor([t for _, t in chunk]) if classes else None
            yield (x,), y

    desc = f"image folder {root}" + (f" ({len(classes)} classes)" if classes else "")
    label_max = max(t for _, t in chosen) if classes else None
    return DataSource(desc, "folder", True, -(-len(chosen) // batch_size), len(chosen), bool(classes), batches,
                      label_max=label_max, dtype=spec.dtype, preprocessing=described, skipped=skipped, notes=notes,
                      class_ids=bool(classes))


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _pixels(n: int) -> str:
    return f"{n / 1e6:.0f} MP" if n >= 10**6 else f"{n:,} pixels"


def _scan(root: Path):
    """(candidates [(path, class id)] taking the classes in turn, class names or None, skipped files, notes).

    ImageFolder's labels and order (class ids by sorted folder name, each class's images recursively, in
    sorted(os.walk()) order), but walked here: ImageFolder walks with os.walk(followlinks=True), which on a
    link back up (a/l1 -> ..) goes round until the path is too long, and on two such links never ends.
    A linked folder is followed (a data set may link its class folders in), but a folder, known by
    (st_dev, st_ino), is entered at most once: the root and the class folders first, so that a link from
    one class into another does not take the other's images under the wrong label."""
    skipped: list[str] = []  # image files left out, "path: reason" (counted with the images considered)
    left_out: list[str] = []  # links and folders not walked, "the link a/l1: why"
    entered: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> the folder's path as first entered

    def enter(path: str, st, ancestors: tuple) -> bool:
        key = (st.st_dev, st.st_ino)
        if key not in entered:
            entered[key] = path
            return True
        what = f"the {'link' if os.path.islink(path) else 'folder'} {os.path.relpath(path, root)}"
        if key in ancestors:
            left_out.append(f"{what}: it leads back to a folder already read")
        else:
            left_out.append(f"{what}: it leads to a folder already read ({os.path.relpath(entered[key], root)})")
        return False

    def images_under(top: str, ancestors: tuple) -> list[Path]:
        """The images below top (entered already; ancestors: its key and those of the folders above it)."""
        found = []  # (folder, its image files): sorted by folder path at the end, as ImageFolder's sorted(os.walk())
        stack = [(top, ancestors)]  # iterative: a deep tree does not reach Python's recursion limit
        while stack:
            folder, ancestors = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                left_out.append(f"the folder {os.path.relpath(folder, root)}: {exc.strerror or exc}")
                continue
            files, subfolders = [], []
            for entry in entries:
                is_image = Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
                if not is_image and not entry.is_dir():  # is_dir follows links; False for a dangling one
                    continue
                try:
                    st = os.stat(entry.path)  # stat (following links), never open: a FIFO would block the reader
                except OSError as exc:  # a dangling link, a loop of links, gone since the listing ...
                    if is_image:
                        skipped.append(f"{entry.path}: {exc.strerror}")
                    else:
                        left_out.append(f"the folder {os.path.relpath(entry.path, root)}: {exc.strerror or exc}")
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if enter(entry.path, st, ancestors):
                        subfolders.append((entry.path, ancestors + ((st.st_dev, st.st_ino),)))
                elif not is_image:
                    continue
                elif stat.S_ISREG(st.st_mode):
                    files.append(Path(entry.path))
                else:
                    skipped.append(f"{entry.path}: not a regular file (a FIFO, socket or device)")
            found.append((folder, files))
            stack.extend(reversed(subfolders))
        found.sort(key=lambda item: item[0])
        return [p for _, files in found for p in files]

    try:
        root_st = os.stat(root)
        with os.scandir(root) as entries:
            top = sorted((e.name, e.is_dir()) for e in entries if e.is_dir()
                         or Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise QtappError(f"cannot scan image folder {root}: {exc.strerror or exc}") from None
    root_key = (root_st.st_dev, root_st.st_ino)
    entered[root_key] = str(root)
    labelled = bool(top) and all(is_dir for _, is_dir in top)
    if not labelled:
        candidates, classes = [(p, 0) for p in images_under(str(root), (root_key,))], None
    else:
        classes = [name for name, _ in top]
        walks = []
        for name in classes:  # every class folder is entered before any is walked (see the docstring)
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError as exc:  # gone since the listing
                left_out.append(f"the folder {name}: {exc.strerror or exc}")
                walks.append(None)
                continue
            walks.append((path, (root_key, (st.st_dev, st.st_ino))) if enter(path, st, (root_key,)) else None)
        by_class = [[(p, i) for p in images_under(*walk)] if walk else [] for i, walk in enumerate(walks)]
        # Take the classes in turn, so that a capped read (a few calibration batches of an ImageNet-style
        # folder) sees every class rather than the first class's files only.
        turns = itertools.zip_longest(*by_class)
        candidates = [item for group in turns for item in group if item is not None]
    # one note a link or folder, up to a few: a folder of many loops is said, not listed
    notes = [f"skipped {what}" for what in left_out[:5]]
    if len(left_out) > 5:
        notes.append(f"skipped {len(left_out) - 5} more links or folders (links to folders already read, "
                     "folders that cannot be listed)")
    return candidates, classes, skipped, notes


def read_image(path: Path, mode: str, need: int = 0):
    image, reason, _ = _decode(path, mode, need)
    if reason:
        raise QtappError(f"cannot use image {path}: {reason}")
    return image


def _decode(path: Path, mode: str, need: int = 0):
    """(image, None, what was done: "downscaled", "16-bit", "float"), or (None, why not, ()).

    The image is in `mode`, or an "F" image in [0, 1] for one channel of more than 8 bits (see the module
    docstring); one over PIL's pixel limit is downscaled to a short side of at least 2 * `need` pixels."""
    from PIL import Image

    with _PIL_LIMIT:
        limit = Image.MAX_IMAGE_PIXELS  # under the lock: never the value lifted below for another thread
    try:
        return _decode_open(path, mode, need, limit)
    except Image.DecompressionBombError:
        pass
    # Over twice its limit, Image.open refuses before the header can be looked at (and a TIFF's load checks
    # again): lift the limit to this module's own bound for this one decode, then put the caller's back.
    # Another thread's PIL calls meanwhile see the lifted limit, never an unlimited one.
    with _PIL_LIMIT:
        Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS if limit is None else max(limit, MAX_DECODE_PIXELS)
        try:
            return _decode_open(path, mode, need, limit)
        except Image.DecompressionBombError as exc:
            return None, f"too large to decode safely ({exc})", ()
        finally:
            Image.MAX_IMAGE_PIXELS = limit


class _Refused(Exception):
    """An image that is read but not used: the message says why."""


def _decode_open(path: Path, mode: str, need: int, limit):
    from PIL import Image

    with warnings.catch_warnings():
        # Sizes are checked in _shrink: PIL's DecompressionBombWarning (its limit up to twice it) is not for
        # the user, and must not escape as an error where warnings are errors.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                source_mode = img.mode
                img, shrunk = _shrink(img, mode, need, limit)
                if source_mode == "I" or source_mode.startswith("I;16") or source_mode == "F":
                    return _to_unit_float(img, source_mode), None, ("downscaled",) * shrunk + (
                        ("float",) if source_mode == "F" else ("16-bit",))
                return img.convert(mode), None, ("downscaled",) * shrunk
        except Image.DecompressionBombError:
            raise
        except _Refused as exc:
            return None, str(exc), ()
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ... for bad files
            return None, f"cannot be read ({type(exc).__name__}: {exc})", ()


def _shrink(img, mode: str, need: int, limit):
    """(img loaded, downscaled or not): an image over PIL's limit (or this module's) decoded smaller, if
    it is larger than the preprocessing needs, or refused (_Refused) if it cannot be decoded safely."""
    w, h = img.size
    if (limit is None or w * h <= limit) and w * h <= MAX_DECODE_PIXELS:
        img.load()
        _check_range(img)
        return img, False
    if w * h > 2 * MAX_DECODE_PIXELS:
        raise _Refused(f"too large to decode safely: {w}x{h} pixels, over {_pixels(2 * MAX_DECODE_PIXELS)}")
    # Twice the size the preprocessing resizes to, as PIL's own reducing_gap=2 (thumbnail): the box-reduced
    # image is then indistinguishable from a direct resize in most cases.
    keep = 2 * max(need, 1)
    short = min(w, h)
    if short > keep:
        img.draft(None, (math.ceil(w * keep / short), math.ceil(h * keep / short)))  # JPEG: 1/2 .. 1/8 scale
    if img.size[0] * img.size[1] > MAX_DECODE_PIXELS:
        raise _Refused(f"too large to decode safely: {w}x{h} pixels, over {_pixels(MAX_DECODE_PIXELS)} "
                       "decoded at once (only a JPEG decodes at a reduced scale)")
    img.load()
    _check_range(img)  # before reducing: an average hides the pixels out of range
    factor = min(img.size) // keep
    if factor >= 2:
        if img.mode in ("1", "P", "PA"):  # no reduce: a box average of palette indices means nothing
            img = img.convert(mode)
        elif img.mode.startswith("I;16"):  # no reduce for 16-bit: to float, exactly
            img = img.convert("F")
        img = img.reduce(factor)
    return img, img.size != (w, h)


def _check_range(img) -> None:
    """Refuse (_Refused) 32-bit integer or float pixels that have no known scale to [0, 1] (module docstring)."""
    if img.mode not in ("I", "F"):
        return
    lo, hi = img.getextrema()
    if img.mode == "I" and (lo < 0 or hi > 65535):
        raise _Refused(f"32-bit integer pixels in {lo}..{hi}: beyond 16 bits (0..65535) there is no known "
                       "scale to [0, 1]")
    if img.mode == "F" and (math.isfinite(lo) and math.isfinite(hi)) and (lo < 0 or hi > 1):
        raise _Refused(f"float pixels in {lo:g}..{hi:g}: a float image is read only if it is in [0, 1] "
                       "(no known scale otherwise)")


def _to_unit_float(img, source_mode: str):
    """An "F" image in [0, 1] from one channel of 16-bit or 32-bit integer (v/65535) or float pixels (as
    they are), already checked by _check_range."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(img if img.mode == "F" else img.convert("F"), dtype=np.float32)
    if source_mode != "F":
        return Image.fromarray(pixels / np.float32(65535))
    # PIL's extrema miss a NaN (unless it comes first); a reduce keeps NaN and inf, so this sees them all
    if not np.isfinite(pixels).all():
        raise _Refused("float pixels that are NaN or infinite")
    return Image.fromarray(pixels)


def image_transform(spec: InputSpec, preprocess, preset=None):
    """(transform PIL image -> C,H,W float tensor, description, notes, the largest size it resizes to).

    The transform also takes the one-channel "F" images of _decode (already in [0, 1]: ToDtype leaves
    float as it is), copying the channel to three for an RGB input before the normalisation."""
    import torch
    from torchvision.transforms import v2

    c, h, w = spec.sample_shape
    notes: list[str] = []
    if preprocess == "auto" and preset is not None:
        name, transform = preset
        crop = list(getattr(transform, "crop_size", []))
        crop = crop * 2 if len(crop) == 1 else crop
        if c == 3 and crop == [h, w]:
            need = max([h, w, *(getattr(transform, "resize_size", None) or [])])
            return _GrayFloatToRGB(transform), _describe_preset(name, transform), notes, need
        notes.append(f"not {name}'s preset: it crops to {'x'.join(map(str, crop))}, the model's input is {h}x{w}")
    if preprocess == "auto":
        preprocess = "imagenet" if (c, h, w) == (3, 224, 224) else {"size": [h, w]}
    # RGB() copies a one-channel ("F") image to three channels; an RGB image passes unchanged
    scale = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)] + ([v2.RGB()] if c == 3 else [])
    if preprocess == "imagenet":
        short = 256 * h // 224
        steps = [v2.Resize(short), v2.CenterCrop((h, w)), *scale, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        crop = h if h == w else f"{h}x{w}"
        described = f"resize {short} (short side, bilinear), centre-crop {crop}, scale to [0, 1], ImageNet mean/std"
        need = max(short, h, w)
    elif preprocess == "none":
        steps = [v2.Resize((h, w)), *scale]
        described = f"resize to {h}x{w} (bilinear), scale to [0, 1]"
        need = max(h, w)
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
        need = max(h, w, *size)
    return v2.Compose(steps), described, notes, need


class _GrayFloatToRGB:
    """A torchvision weights preset (resize, crop, to [0, 1], normalise 3 channels) that also takes a
    one-channel "F" image: PIL has no 3-channel float mode, and the preset's normalisation wants three
    channels, so the preset runs on the one channel with a neutral mean/std, and the channel is copied to
    three before the preset's own mean/std. An 8-bit image goes through the preset as it is."""

    def __init__(self, preset):
        self.preset = preset
        self.neutral = copy.copy(preset)
        self.neutral.mean, self.neutral.std = [0.0], [1.0]

    def __call__(self, image):
        if getattr(image, "mode", None) != "F":
            return self.preset(image)
        from torchvision.transforms.v2 import functional as F

        return F.normalize(self.neutral(image).expand(3, -1, -1), self.preset.mean, self.preset.std)


def _describe_preset(name: str, transform) -> str:
    resize = getattr(transform, "resize_size", None)
    interp = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    crop = getattr(transform, "crop_size", None)
    mean, std = tuple(getattr(transform, "mean", ())), tuple(getattr(transform, "std", ()))
    norm = "ImageNet mean/std" if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD) else f"mean {list(mean)} std {list(std)}"
    return (f"{name} preset: resize {resize[0] if resize else '-'} (short side, {interp}), "
            f"centre-crop {crop[0] if crop else '-'}, scale to [0, 1], {norm}")
