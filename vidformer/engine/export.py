"""`vidformer export`: a checkpoint's model as a deployable graph, checked against the model it came from.

The format follows the output's extension:
  .pt2   torch.export ExportedProgram (torch.export.load(path).module()(x) runs it);
  .onnx  ONNX through torch's exporter (needs the optional `vidformer[export]` extra: onnx, onnxscript;
         with onnxruntime installed the file is run and checked too).
The batch axis is dynamic. The clip length is dynamic for the families whose graph does not depend on it
(`export_frame_multiple()`: UniFormer, PoolFormer, in multiples of their temporal stride); MViTv2 (its
rel-pos tables are sized for T), CvT (the cls key's log T bias) and DVT (per-exit token grids) are
exported for the one T they were built with. DVT exports its full cascade: the logits of the final exit
(early exit is a data-dependent batch split, kept to the Python API). The graph is the path eager
inference runs, on the model fused for inference (layers.fuse_for_inference); after export the logits of
the graph are compared with the model's on a random clip, at another batch size and (when dynamic) another
clip length, and a difference above `atol` is an error.
"""

import copy
import importlib.util
import os

import torch
from torch import nn
from torch.export import Dim

from vidformer.checkpoint.io import atomic_path
from vidformer.errors import UsageError
from vidformer.layers import fuse_for_inference

FORMATS = (".pt2", ".onnx")


def export_checkpoint(checkpoint: str, out: str, *, num_frames: int | None = None, img_size: int | None = None,
                      config: str | None = None, overrides=(), allow_partial: bool = False, atol: float = 1e-4) -> dict:
    """Load `checkpoint` (as load_recognizer does, at num_frames x img_size when given) and export_model it."""
    from vidformer.engine.recognizer import load_recognizer

    _format(out)
    opts = list(overrides)
    if num_frames is not None:
        opts += ["DATA.NUM_FRAMES", str(num_frames)]
    if img_size is not None:
        opts += ["DATA.TRAIN_CROP_SIZE", str(img_size), "DATA.TEST_CROP_SIZE", str(img_size)]
    recognizer = load_recognizer(checkpoint, "cpu", config=config, overrides=opts, allow_partial=allow_partial)
    cfg = recognizer.cfg
    return export_model(recognizer.model, out, num_frames=cfg.DATA.NUM_FRAMES, img_size=cfg.DATA.TRAIN_CROP_SIZE,
                        atol=atol)


def _format(out: str) -> str:
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"export output '{out}': the extension picks the format; expected one of {', '.join(FORMATS)}")
    if ext == ".onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise UsageError(f"ONNX export needs {', '.join(missing)}: pip install 'vidformer[export]'")
    return ext


def _frame_multiple(model: nn.Module, num_frames: int) -> int | None:
    multiple = model.export_frame_multiple() if hasattr(model, "export_frame_multiple") else None
    return multiple if multiple and num_frames > 1 and num_frames % multiple == 0 else None


def _write_to(out: str, write) -> None:
    with atomic_path(out) as tmp:
        write(tmp)


def _dims(multiple: int | None) -> dict:
    dims = {0: Dim("batch", min=1, max=4096)}
    if multiple:
        dims[2] = multiple * Dim("clip_units", min=1, max=4096 // multiple)
    return dims


def _export(model: nn.Module, x: torch.Tensor, multiple: int | None, longer: torch.Tensor):
    """The ExportedProgram with a dynamic batch and, when `multiple` is given and the graph traced at x's clip
    length also runs a twice as long clip, a dynamic clip length; else the clip length of x."""
    if multiple:
        program = torch.export.export(model, (x,), dynamic_shapes={"x": _dims(multiple)})
        try:
            program.module()(longer[:, :, :x.shape[2] + multiple])
            return program, multiple
        except (AssertionError, RuntimeError):  # a shape guard: the graph took a branch that holds only at this T
            pass
    return torch.export.export(model, (x,), dynamic_shapes={"x": _dims(None)}), None


@torch.no_grad()
def export_model(model: nn.Module, out: str, *, num_frames: int, img_size: int, batch: int = 2,
                 atol: float = 1e-4) -> dict:
    """Export `model` fused for inference (a fused copy unless it already is: the caller's model can still
    train) for (B, 3, num_frames, img_size, img_size) clips to `out`; returns a summary with the dynamic axes
    and the largest logit difference found in the checks."""
    ext = _format(out)
    if not getattr(model, "fused_for_inference", False):
        model = fuse_for_inference(copy.deepcopy(model))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, num_frames, img_size, img_size, generator=gen)
    longer = torch.randn(1, 3, 2 * num_frames, img_size, img_size, generator=gen)
    program, multiple = _export(model, x, _frame_multiple(model, num_frames), longer)
    checks = [x, torch.randn(batch + 1, 3, num_frames, img_size, img_size, generator=gen)]
    if multiple:
        checks.append(longer)
    expected = [model(c) for c in checks]
    summary = {"output": out, "format": ext[1:], "input": ["batch", 3, "frames" if multiple else num_frames,
                                                           img_size, img_size],
               "dynamic": ["batch"] + (["frames"] if multiple else []),
               "frames_multiple_of": multiple, "checked_shapes": [list(c.shape) for c in checks]}
    module = program.module()
    if ext == ".pt2":
        got = [module(c) for c in checks]
        _write_to(out, lambda path: torch.export.save(program, path))
        summary["max_abs_diff"] = _check(got, expected, atol, "the ExportedProgram")
        return summary
    try:
        _write_to(out, lambda path: torch.onnx.export(program, (x,), path, verbose=False))
    except Exception as e:  # torch's converter, not the user's input: name the model and the first line
        raise RuntimeError(f"torch.onnx could not convert {type(model).__name__} "
                           f"({type(e).__name__}: {_first_line(e)}); its .pt2 export works") from e
    summary["max_abs_diff_exported_program"] = _check([module(c) for c in checks], expected, atol,
                                                      "the ExportedProgram behind the ONNX file")
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        got = [torch.from_numpy(session.run(None, {name: c.numpy()})[0]) for c in checks]
        summary["max_abs_diff"] = _check(got, expected, atol, "onnxruntime")
    else:
        summary["max_abs_diff"] = None
        summary["note"] = "onnxruntime is not installed: the ONNX file itself was not run"
    return summary


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    summary = next((line for line in lines if "Cannot" in line or "Error" in line), lines[0] if lines else "")
    return summary.strip()[:300]


def _check(got: list[torch.Tensor], expected: list[torch.Tensor], atol: float, what: str) -> float:
    worst = max((g.float() - e.float()).abs().max().item() for g, e in zip(got, expected))
    if not worst <= atol:
        raise RuntimeError(f"{what} gives logits up to {worst:.2e} away from the model's (allowed {atol:.0e})")
    return worst
