"""A run's output folder is whole or absent: staged beside `--out` and swapped in at the end.

Every file a run writes (models, recipe, report, plots) goes into a staging folder next to the
destination. Only when all of them are written and verified is the staging folder swapped with the
destination in one `renameat2(RENAME_EXCHANGE)` call (Linux), so a kill at any moment leaves either
the previous result set or the new one, never a mix. Where the exchange is not available, two renames
are used and the previous set is kept under a `.NAME.previous-*` name until the new one is in place.

Before any work, the destination is checked against everything the run reads (model file, weights,
data, recipe): a run never replaces or deletes its own inputs, nor a folder holding other files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import QtappError, UsageError
from .scratch import process_alive

# What a result folder may hold: anything else in an existing --out is someone's file, not ours.
RESULT_FILES = frozenset({"model.pt", "model.ptl", "model.onnx", "model.pte", "recipe.json", "report.json",
                          "report.html", "tune.json", "graph.pt2", "node_data.json", "node_data_accumulated.json",
                          "node_data_diagnosis.json"})
RESULT_DIRS = frozenset({"plots"})
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def disk_full_error(path: Path, exc: OSError) -> QtappError:
    """One message for a write that ran out of room, naming the file and the space left."""
    try:
        free = shutil.disk_usage(_existing_ancestor(path)).free
        room = f"{free / 1e6:.1f} MB free on that disk"
    except OSError:
        room = "free space unknown"
    what = "the file size limit (ulimit -f) was reached" if exc.errno == errno.EFBIG else "the disk is full"
    return QtappError(f"cannot write {_public(path)}: {what} ({room}). No partial file was left, and a "
                      "previous result in that folder is untouched; free some space or choose another folder.")


_STAGED: dict[Path, Path] = {}  # staging folder -> the folder it will become (what messages name)
# The longest name a run writes inside the staging folder: write_bytes_atomic's ".NAME.XXXXXXXX.partial".
_LONGEST_FILE = len(".") + max(len(name) for name in RESULT_FILES) + len(".") + 8 + len(".partial")


def _public(path: Path) -> Path:
    """The path a staged file will have once published (messages name that, not the staging folder)."""
    final = _STAGED.get(path.parent)
    return final / path.name if final is not None else path


def _staging_stem(name: str) -> str:
    """`.NAME.staging-`, with NAME shortened (and a digest added) when the whole staging name would pass
    the 255-byte limit of a file name: a 250-character --out is a valid name, its staging name must be too."""
    stem = f".{name}.staging-"
    if len(os.fsencode(stem)) + 24 <= 255:  # PID, '-', mkdtemp's 8 random characters
        return stem
    import hashlib

    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:10]
    return f".{os.fsencode(name)[:180].decode('utf-8', 'ignore')}~{digest}.staging-"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path` and move it into place only when complete;
    a full disk raises one `QtappError` naming the file, and leaves no partial file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for colleagues too
        os.replace(tmp, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _existing_ancestor(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class ResultSet:
    """Stage the files of one run and publish them as one folder.

    `reads` are the paths the run reads (model source, weights, data files or folders, the recipe):
    none may lie inside the destination, and the destination may not lie inside a data folder.
    """

    def __init__(self, out: Path, reads: list[Path] = ()) -> None:
        self.given = Path(out)  # as the user wrote it: what messages and reports name
        self.out = Path(out).expanduser().absolute()
        if self.out.is_symlink():  # a link to a results folder: the results go where it leads, the link stays
            self.out = Path(os.path.realpath(self.out))
        self.reads = [Path(p).expanduser().resolve() for p in reads if p]
        self.staging: Path | None = None

    # -- before any work -----------------------------------------------------------------------------
    def check(self) -> None:
        out = self.out.resolve()
        for ancestor in out.parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise UsageError(f"--out {self.given}: {ancestor} is a file, not a folder")
                break
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {self.out} is a file: give a folder for the results")
        cwd = Path.cwd().resolve()
        if _inside(cwd, out):
            raise UsageError(f"--out {self.out} is the current folder (or holds it): the run replaces that "
                             "folder as a whole; give a new or result folder, e.g. --out results")
        for path in self.reads:
            if _inside(path, out):
                raise UsageError(f"--out {self.out} holds {path}, which this run reads: the results replace the "
                                 "whole folder, so it would be lost. Choose another --out.")
            if path.is_dir() and _inside(out, path):
                raise UsageError(f"--out {self.out} lies inside the data folder {path}: results written there "
                                 "would be read as data by later runs. Choose another --out.")
        self._check_limits(out)
        self._check_swappable(out)
        if out.is_dir():
            foreign = sorted(p.name for p in out.iterdir()
                             if not ((p.name in RESULT_FILES and p.is_file()) or (p.name in RESULT_DIRS and p.is_dir())))
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise UsageError(f"--out {self.out} already holds files that are not a qtapp result ({shown}): the "
                                 "run replaces the whole folder. Give a new folder or a previous result folder.")

    def _check_limits(self, out: Path) -> None:
        """Names and paths the run will create fit the file system's limits (checked before the work)."""
        base = _existing_ancestor(out.parent)
        try:
            name_max, path_max = os.pathconf(base, "PC_NAME_MAX"), os.pathconf(base, "PC_PATH_MAX")
        except (OSError, ValueError):
            name_max, path_max = 255, 4096
        for part in out.parts:
            if len(os.fsencode(part)) > name_max:
                raise UsageError(f"--out: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; this file "
                                 f"system allows at most {name_max} for one name. Choose a shorter --out.")
        staged = len(os.fsencode(str(out.parent))) + 1 + len(os.fsencode(_staging_stem(out.name))) + 24
        longest = max(staged, len(os.fsencode(str(out)))) + 1 + _LONGEST_FILE
        if longest >= path_max:
            raise UsageError(f"--out is {len(os.fsencode(str(out)))} bytes long as a full path; with the files a run "
                             f"writes inside it (and its staging folder) paths reach {longest} bytes, past this file "
                             f"system's limit of {path_max}. Choose a shorter --out.")

    def _check_swappable(self, out: Path) -> None:
        """The end of the run swaps the folder in: refuse now what would make that swap fail after the work."""
        if out.is_dir() and os.path.ismount(out):
            raise UsageError(f"--out {self.given} is a mount point: the run replaces the folder as a whole by "
                             "renaming, and a mount point cannot be renamed. Give a folder inside it, e.g. "
                             f"--out {self.given / 'results'}")
        parent = _existing_ancestor(out.parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--out {self.given}: the folder {parent} cannot be written, and the run stages its "
                             "files beside --out before swapping them in. Choose a folder you can write.")
        st_parent = parent.stat()
        if out.exists() and st_parent.st_mode & 0o1000 and os.geteuid() not in (0, out.stat().st_uid, st_parent.st_uid):
            raise UsageError(f"--out {self.given} belongs to another user in a sticky folder ({parent}): it cannot "
                             "be replaced. Choose another --out.")

    def protected(self) -> list[Path]:
        """Paths no file of the run may be written over (passed on to export)."""
        return list(self.reads)

    # -- staging -----------------------------------------------------------------------------------------
    def __enter__(self) -> "ResultSet":
        self.check()
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(parent, self.out.name)
            self.staging = Path(tempfile.mkdtemp(dir=parent, prefix=f"{_staging_stem(self.out.name)}{os.getpid()}-"))
            _STAGED[self.staging] = self.given
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"--out {self.given}: a part of that path is a file, not a folder") from None
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.out, exc) from None
            raise QtappError(f"cannot create the results folder {self.given} (beside it, the run stages its "
                             f"files first): {exc.strerror}") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.staging is not None:
            _STAGED.pop(self.staging, None)
            if self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None

    def path(self, name: str) -> Path:
        assert self.staging is not None, "use ResultSet as a context manager"
        return self.staging / name

    def final_path(self, name: str) -> Path:
        """Where `name` will be once published (what reports and messages should name)."""
        return self.given / name

    def publish(self) -> None:
        """Swap the staged folder in; the previous result set is removed only after the swap."""
        try:
            self._publish()
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.out, exc) from None
            raise QtappError(f"cannot put the results in place at {self.given}: {exc.strerror} (renaming "
                             f"{self.staging} over it); the previous contents of {self.given} are untouched") from None

    def _publish(self) -> None:
        staging, out = self.staging, self.out
        if staging is None:
            raise RuntimeError("nothing staged")
        _STAGED.pop(staging, None)
        os.chmod(staging, 0o755 & ~_umask())
        if not out.exists():
            os.rename(staging, out)
            self.staging = None
            return
        if _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the previous result set
            self.staging = None
            return
        previous = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.previous-"))
        os.rmdir(previous)
        os.rename(out, previous)
        os.rename(staging, out)
        shutil.rmtree(previous, ignore_errors=True)
        self.staging = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(parent: Path, name: str) -> None:
    """Staging folders left by runs that were killed: their process is gone, the folder is litter."""
    stem = _staging_stem(name)
    for p in parent.iterdir():
        if not p.name.startswith(stem):
            continue
        pid = p.name[len(stem):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))
