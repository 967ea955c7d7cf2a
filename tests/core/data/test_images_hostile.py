"""Hostile image folders: link loops, 16-bit and float pixels, photos over PIL's decompression-bomb limit.
Each opens in bounded time and gives the inputs the same pictures would give as 8-bit files, or says what
it left out and why."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qtapp.core.base.inputs import InputSpec
from qtapp.core.data import images
from qtapp.core.data.open import open_source

REPO = Path(__file__).resolve().parents[3]
RGB16 = InputSpec.parse("1,3,16,16")
GRAY16 = InputSpec.parse("1,1,16,16")
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png(path, color, size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def inputs_of(source):
    """(all inputs as one tensor, all labels or None)."""
    got = [(inputs[0], y) for inputs, y in source]
    x = torch.cat([x for x, _ in got])
    return x, (torch.cat([y for _, y in got]) if got[0][1] is not None else None)


# -- 1. link loops ------------------------------------------------------------------------------------------
OPEN_IN_A_SUBPROCESS = """
import json, sys
from qtapp.core.data.open import open_source
from qtapp.core.base.inputs import InputSpec
source = open_source(sys.argv[1], InputSpec.parse("1,3,16,16"), batch_size=4, max_batches=25)
x, y = [], []
for (inputs,), labels in source:
    x += [[round(float(v), 3) for v in s.mean(dim=(1, 2))] for s in inputs]
    y += labels.tolist()
print(json.dumps({"samples": source.samples, "colours": x, "labels": y,
                  "description": source.description, "notes": source.notes, "skipped": source.skipped}))
"""


def _open_in_a_subprocess(root, timeout=60):
    """open_source in a subprocess: a scan that walks a loop forever is killed, and the test fails, rather
    than a thread that goes on walking (and filling memory) for the rest of the session."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, "-c", OPEN_IN_A_SUBPROCESS, str(root)], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"opening {root} did not end in {timeout} s: the scan walks a link loop")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_an_image_folder_with_link_loops_reads_each_image_once_and_names_the_links(tmp_path):
    root = tmp_path / "images"
    _png(root / "cat" / "a.png", RED)
    _png(root / "cat" / "sub" / "b.png", RED)
    _png(root / "dog" / "c.png", BLUE)
    os.symlink("..", root / "cat" / "l1")  # back to the root: every class again, below cat
    os.symlink(root / "cat", root / "cat" / "sub" / "loop")  # back to its own class folder
    os.symlink(".", root / "dog" / "self")
    # two loops in one class: os.walk(followlinks=True) (ImageFolder) branches at every level and never ends
    got = _open_in_a_subprocess(root)  # a walk that follows the loops never ends: the subprocess is killed
    assert got["samples"] == 3 and "2 classes" in got["description"]
    assert got["labels"] == [0, 1, 0]  # cat/a.png, dog/c.png, cat/sub/b.png: classes in turn, sorted
    assert got["colours"] == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    assert got["skipped"] == []  # links are not images: they are said in the notes
    for link in ("cat/l1", "cat/sub/loop", "dog/self"):
        assert f"skipped the link {link}: it leads back to a folder already read" in got["notes"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_one_link_back_up_is_skipped_with_the_note_naming_it(tmp_path):
    # one loop does end under os.walk (the kernel stops at 40 links in a path), but reads every image 40 times
    root = tmp_path / "images"
    _png(root / "a" / "x.png", RED)
    _png(root / "b" / "y.png", GREEN)
    os.symlink("..", root / "a" / "l1")
    source = open_source(str(root), RGB16, batch_size=4, max_batches=25)
    x, y = inputs_of(source)
    assert source.samples == 2 and y.tolist() == [0, 1]
    assert "skipped the link a/l1: it leads back to a folder already read" in source.notes


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_linked_class_folders_are_followed_but_no_folder_is_read_twice(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "birds"
    _png(elsewhere / "e.png", GREEN)
    _png(elsewhere / "deeper" / "f.png", GREEN)
    root = tmp_path / "images"
    _png(root / "cat" / "a.png", RED)
    _png(root / "dog" / "c.png", BLUE)
    os.symlink(elsewhere, root / "bird")  # a data set that links a class folder in: read
    os.symlink(root / "dog", root / "cat" / "dogs")  # one class into another: not read as cat
    os.symlink(root / "cat", root / "kitty")  # a second link to a class folder: not read twice
    source = open_source(str(root), RGB16, batch_size=8, max_batches=1)
    x, y = inputs_of(source)
    assert "4 classes" in source.description  # bird, cat, dog, kitty: ImageFolder's class ids are kept
    assert sorted(y.tolist()) == [0, 0, 1, 2]
    for xi, yi in zip(x, y):  # each image under its own class only: green birds, red cats, blue dogs
        assert xi.mean(dim=(1, 2)).tolist() == {0: [0, 1, 0], 1: [1, 0, 0], 2: [0, 0, 1]}[int(yi)]
    assert "skipped the link cat/dogs: it leads to a folder already read (dog)" in source.notes
    assert "skipped the link kitty: it leads to a folder already read (cat)" in source.notes


# -- 2. 16-bit and float pixels ------------------------------------------------------------------------------
def _png16(path, values):
    """A 16-bit PNG (grayscale for H,W, RGB for H,W,3 uint16) by a raw encoder: PIL cannot write 48-bit RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 0 if values.ndim == 2 else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _pair(tmp_path, pixels8, write16):
    """Two one-image folders: the 8-bit picture, and its 16-bit version (v16 = v8 * 257) written by write16."""
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    eight.mkdir()
    sixteen.mkdir()
    Image.fromarray(pixels8).save(eight / "a.png")
    write16(sixteen / "a.png", pixels8.astype(np.uint16) * 257)
    return eight, sixteen


def _pil16(path, values):
    Image.fromarray(values).save(path)  # mode "I;16"


SPECS = {"gray": (GRAY16, "auto"), "rgb": (RGB16, "auto"),
         "rgb-mean-std": (RGB16, {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]}),
         "imagenet": (InputSpec.parse("1,3,224,224"), "imagenet")}


@pytest.mark.parametrize("write16", [_pil16, _png16], ids=["PIL I;16", "raw PNG"])
@pytest.mark.parametrize("case", list(SPECS))
def test_a_16_bit_grayscale_image_gives_the_input_of_its_8_bit_version(tmp_path, case, write16):
    spec, preprocess = SPECS[case]
    size = spec.sample_shape[1] + 32 if case == "imagenet" else spec.sample_shape[1]  # 256: resize 256 is exact
    pixels8 = np.random.default_rng(0).integers(95, 162, (size, size), dtype=np.uint8)  # 0.373 .. 0.635
    eight, sixteen = _pair(tmp_path, pixels8, write16)
    x8, _ = inputs_of(open_source(str(eight), spec, 1, 1, preprocess=preprocess))
    source = open_source(str(sixteen), spec, 1, 1, preprocess=preprocess)
    x16, _ = inputs_of(source)
    assert x16.shape == x8.shape and float((x16 - x8).abs().max()) < 1e-3
    assert "1 16-bit image scaled from 0..65535 to [0, 1]" in source.notes


def test_a_16_bit_image_through_a_weights_preset_gives_the_input_of_its_8_bit_version(tmp_path):
    import torchvision.models as tvm

    weights = tvm.get_model_weights("efficientnet_b0").DEFAULT  # resize 256 bicubic, crop 224
    preset = (str(weights), weights.transforms())
    pixels8 = np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)
    eight, sixteen = _pair(tmp_path, pixels8, _pil16)
    spec = InputSpec.parse("1,3,224,224")
    x8, _ = inputs_of(open_source(str(eight), spec, 1, 1, preset=preset))
    x16, _ = inputs_of(open_source(str(sixteen), spec, 1, 1, preset=preset))
    assert x16.shape == x8.shape == (1, 3, 224, 224) and float((x16 - x8).abs().max()) < 1e-3


@pytest.mark.parametrize("spec", [GRAY16, RGB16], ids=["gray", "rgb"])
def test_a_resized_16_bit_image_is_resized_as_pil_resizes_its_8_bit_version(tmp_path, spec):
    # Resized, the two cannot agree to 1e-3: PIL resizes an 8-bit image in two passes (across, then down),
    # rounding to 1/255 after each. The 16-bit image goes through the same PIL filter without the rounding:
    # within 1/255 of the 8-bit input, and equal to the 8-bit picture resized as floats.
    pixels8 = np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8)
    eight, sixteen = _pair(tmp_path, pixels8, _pil16)
    x8, _ = inputs_of(open_source(str(eight), spec, 4, 1, preprocess="none"))
    x16, _ = inputs_of(open_source(str(sixteen), spec, 4, 1, preprocess="none"))
    assert float((x16 - x8).abs().max()) <= 1 / 255
    resized = Image.fromarray(pixels8.astype(np.float32) / 255).resize((16, 16), Image.Resampling.BILINEAR)
    exact = torch.from_numpy(np.array(resized)).expand(spec.sample_shape[0], 16, 16)
    assert float((x16[0] - exact).abs().max()) < 1e-5


def test_48_bit_rgb_pngs_are_read_by_pil_at_8_bits(tmp_path):
    # Pins PIL's reading (it passes before the 16-bit fix too): a 48-bit RGB PNG opens as mode "RGB" with
    # the high byte of each value, so v16 = v8 * 257 gives exactly the 8-bit picture, and nothing is said.
    pixels8 = np.random.default_rng(3).integers(95, 162, (16, 16, 3), dtype=np.uint8)
    eight, sixteen = _pair(tmp_path, pixels8, _png16)
    assert Image.open(sixteen / "a.png").mode == "RGB"
    x8, _ = inputs_of(open_source(str(eight), RGB16, 1, 1))
    source = open_source(str(sixteen), RGB16, 1, 1)
    assert torch.equal(inputs_of(source)[0], x8) and not any("16-bit" in n for n in source.notes)


def test_the_16_bit_note_counts_the_images(tmp_path):
    for i in range(3):
        _pil16(tmp_path / f"{i}.png", np.full((16, 16), 1000 * i, np.uint16))
    _png(tmp_path / "8bit.png", RED)
    source = open_source(str(tmp_path), GRAY16, 4, 1)
    assert "3 16-bit images scaled from 0..65535 to [0, 1]" in source.notes
    x, _ = inputs_of(source)
    red_as_gray = round(0.299 * 255) / 255  # PIL's L = 299/1000 R + ...
    expected = torch.tensor([0.0, 1000 / 65535, 2000 / 65535, red_as_gray])
    assert torch.allclose(x.mean(dim=(1, 2, 3)).sort().values, expected, atol=1e-4)


def test_float_and_32_bit_images_are_scaled_by_a_stated_rule_or_skipped_with_the_reason(tmp_path):
    pixels8 = np.random.default_rng(4).integers(95, 162, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels8).save(tmp_path / "a_eight.png")
    Image.fromarray(pixels8.astype(np.float32) / 255).save(tmp_path / "b_float.tif")  # "F" in [0, 1]: as it is
    Image.fromarray(pixels8.astype(np.int32) * 257).save(tmp_path / "c_int.tif")  # "I" within 16 bits: v/65535
    Image.fromarray(pixels8.astype(np.float32)).save(tmp_path / "d_float255.tif")  # "F" in 95..161: no scale
    Image.fromarray(pixels8.astype(np.int32) * 70000).save(tmp_path / "e_int_big.tif")  # "I" beyond 16 bits
    nan = pixels8.astype(np.float32) / 255
    nan[3, 4] = np.nan
    Image.fromarray(nan).save(tmp_path / "f_nan.tif")
    assert [Image.open(tmp_path / n).mode for n in ("b_float.tif", "c_int.tif")] == ["F", "I"]
    source = open_source(str(tmp_path), GRAY16, 8, 1)
    x, _ = inputs_of(source)
    assert source.samples == 3
    assert float((x - x[0]).abs().max()) < 1e-3  # the three pictures give one input
    reasons = {Path(s.split(": ", 1)[0]).name: s.split(": ", 1)[1] for s in source.skipped}
    assert set(reasons) == {"d_float255.tif", "e_int_big.tif", "f_nan.tif"}
    assert "float pixels in 95..161" in reasons["d_float255.tif"]
    assert f"32-bit integer pixels in {95 * 70000}..{161 * 70000}" in reasons["e_int_big.tif"]
    assert "NaN or infinite" in reasons["f_nan.tif"]
    assert "1 float image with pixels in [0, 1] read unscaled" in source.notes
    assert "1 16-bit image scaled from 0..65535 to [0, 1]" in source.notes


# -- 3. images over PIL's decompression-bomb limit -----------------------------------------------------------
def test_images_over_pils_limit_are_read_downscaled_and_said(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    root = tmp_path / "images"
    _png(root / "big.png", RED, size=(200, 150))  # over twice the limit: PIL refuses to open it
    _png(root / "mid.png", GREEN, size=(96, 72))  # over the limit: PIL warns
    _png(root / "small.png", BLUE, size=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes
        source = open_source(str(root), RGB16, batch_size=4, max_batches=1)
        x, _ = inputs_of(source)
    assert source.samples == 3 and source.skipped == []
    assert [s.mean(dim=(1, 2)).tolist() for s in x] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert any("downscaled 2 images over 5,000 pixels before preprocessing" in n for n in source.notes)
    assert Image.MAX_IMAGE_PIXELS == 5000  # the caller's limit, put back


def test_a_downscaled_image_gives_nearly_the_input_of_a_full_decode(tmp_path, monkeypatch):
    ramp = np.add.outer(np.linspace(0, 200, 300), np.linspace(0, 55, 400)).astype(np.uint8)  # smooth
    Image.fromarray(ramp).convert("RGB").save(tmp_path / "ramp.png")
    spec = InputSpec.parse("1,3,24,24")
    full, _ = inputs_of(open_source(str(tmp_path), spec, 1, 1))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    source = open_source(str(tmp_path), spec, 1, 1)
    small, _ = inputs_of(source)
    assert any("downscaled 1 image" in n for n in source.notes)
    assert float((small - full).abs().max()) < 0.02


def test_what_cannot_be_decoded_safely_is_refused_by_name_and_a_jpeg_is_drafted(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 20_000)  # headers over 40,000 pixels refused
    root = tmp_path / "images"
    _png(root / "a_decoded_too_big.png", RED, size=(200, 150))  # 30,000 pixels to decode
    root.mkdir(exist_ok=True)
    Image.new("RGB", (200, 150), GREEN).save(root / "b_drafted.jpg")  # decoded at 1/4: 50x38
    Image.new("RGB", (400, 300), GREEN).save(root / "c_header_too_big.jpg")
    source = open_source(str(root), RGB16, batch_size=4, max_batches=1)
    assert source.samples == 1
    reasons = {Path(s.split(": ", 1)[0]).name: s.split(": ", 1)[1] for s in source.skipped}
    assert set(reasons) == {"a_decoded_too_big.png", "c_header_too_big.jpg"}
    assert all("too large to decode safely" in r and "pixels" in r for r in reasons.values())
    assert "200x150" in reasons["a_decoded_too_big.png"]
    (x, _), = [(inputs[0], y) for inputs, y in source]
    assert torch.allclose(x.mean(dim=(2, 3)), torch.tensor([[0.0, 1.0, 0.0]]), atol=0.01)  # JPEG's green
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_a_real_120_mp_jpeg_is_read_downscaled(tmp_path):
    Image.new("L", (13000, 9231), 128).save(tmp_path / "photo.jpg", quality=90)  # 120 MP, a flat grey
    assert 13000 * 9231 > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning: it was never decoded at full size
        source = open_source(str(tmp_path), InputSpec.parse("1,3,224,224"), 1, 1)
        x, _ = inputs_of(source)
    assert any("downscaled 1 image over 89 MP" in n for n in source.notes)
    grey = (128 / 255 - torch.tensor(images.IMAGENET_MEAN)) / torch.tensor(images.IMAGENET_STD)
    assert torch.allclose(x[0].mean(dim=(1, 2)), grey, atol=0.02)
