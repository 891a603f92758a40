"""Reading and writing checkpoint files safely.

Reading never runs code: pickles load with torch.load(weights_only=True) (safetensors files with
safetensors). Writing is atomic: a temp file in the target folder, fsync, then rename, so a killed
process leaves either the old checkpoint or the new one, never half of one. Files get the mode the
user's umask gives (mkstemp would make them 0600, unreadable to teammates), and a temp file is removed
when the save fails; one left by a SIGKILL is found by `remove_stale_temps`.
"""

import contextlib
import os
import pickle
import tempfile
import zipfile

import torch
from iopath.common.file_io import PathManager

from vidformer.checkpoint.remote import resolve_source
from vidformer.errors import UsageError

path_manager = PathManager()

_CONTAINERS = ("model_state", "model_state_dict", "state_dict", "model", "module", "model_ema", "net")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def load_checkpoint_file(path: str) -> dict:
    """The object stored in a checkpoint file (a .pt/.pth/.pyth pickle or a .safetensors file).

    A URL or zoo name (`zoo:NAME`) is read from the download cache, fetched once (checkpoint/remote.py)."""
    path = resolve_source(path)
    if not path_manager.exists(path):
        raise UsageError(f"checkpoint '{path}' does not exist")
    local = path_manager.get_local_path(path)
    if os.path.isdir(local):
        raise UsageError(f"checkpoint '{path}' is a directory; expected a checkpoint file (.pth, .pyth, .safetensors)")
    if local.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(local)
        except (SafetensorError, OSError) as e:
            raise UsageError(f"checkpoint '{path}' is not a readable safetensors file: {e}") from None
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the blocked callable in a "GLOBAL" line; anything else is a file that is no pickle at all
        needs_code = [line for line in str(e).splitlines() if "GLOBAL" in line]
        if not needs_code:
            raise UsageError(f"checkpoint '{path}' is not a PyTorch checkpoint (it does not unpickle)") from None
        raise UsageError(
            f"checkpoint '{path}' needs code to be unpickled, which could run anything, so vidformer refuses it "
            f"({needs_code[0].strip()[:200]}). If you trust the file, re-save its tensors once with plain torch: "
            f"python -c \"import torch; torch.save(torch.load('{path}', weights_only=False), 'clean.pth')\" "
            f"(or keep only its state dict), then load clean.pth."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        if os.path.getsize(local) == 0:
            raise UsageError(f"checkpoint '{path}' is empty (0 bytes)") from None
        first_line = (str(e).splitlines() or [""])[0][:200]
        raise UsageError(
            f"checkpoint '{path}' is truncated or not a PyTorch checkpoint ({type(e).__name__}: {first_line})"
        ) from None


_TEMP_PREFIX = ".tmp_"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str):
    """A temp path in `path`'s folder to write to; renamed over `path` when the block ends well, removed
    when it fails, so a reader sees the old file or the new one, never half of one. The file gets the
    mode a plain open() would give (0666 minus the umask). The temp name keeps `path`'s extension."""
    local_dir = os.path.dirname(path) or "."
    path_manager.mkdirs(local_dir)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=os.path.basename(path), dir=local_dir)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path: str, write, binary: bool = False) -> None:
    """Call write(f) on an open file whose contents replace `path` atomically (see atomic_path), fsynced."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", newline=None if binary else "") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def save_checkpoint(obj, path: str) -> None:
    """torch.save `obj` to `path` atomically (temp file + fsync + rename)."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def remove_stale_temps(folder: str) -> list[str]:
    """Delete the temp files that saves into `folder` left behind (a process killed mid-save); returns them.

    Call it only where no other process is saving into `folder` at the same time.
    """
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.startswith(_TEMP_PREFIX)]
    for path in stale:
        os.remove(path)
    return stale


def unwrap_state_dict(obj) -> tuple[dict[str, torch.Tensor], str]:
    """Find the state dict inside common containers and strip wrapper prefixes.

    Returns the state dict and where it was found (e.g. "['model_state']", "module. stripped").
    """
    where = []
    while isinstance(obj, dict) and not _is_state_dict(obj):
        key = next((k for k in _CONTAINERS if k in obj and isinstance(obj[k], dict)), None)
        if key is None:
            raise UsageError(
                f"no state dict found: the checkpoint is a dict with keys {sorted(obj)[:12]}; expected tensors "
                f"or one of the containers {', '.join(_CONTAINERS)}"
            )
        where.append(f"['{key}']")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise UsageError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            where.append(f"'{prefix}' stripped")
    return state, " ".join(where) or "top level"


def _is_state_dict(d: dict) -> bool:
    tensors = sum(isinstance(v, torch.Tensor) for v in d.values())
    return tensors > 0 and tensors >= len(d) // 2
