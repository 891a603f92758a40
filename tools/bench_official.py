"""vidformer against the official code it reimplements, holding the same random weights: UniFormer-S video
against Sense-X/UniFormer's PySlowFast `Uniformer`, and the DeiT-S DVT cascade against
blackfeather-wang/Dynamic-Vision-Transformer's `DVT_Deit_small`.

    python tools/bench_official.py --uniformer-repo PATH --dvt-repo PATH [--quick]

Each PATH is a checkout of the official repository; its model code is imported from there at run time
(nothing of it is in vidformer). The official model is built from its own config or builder, its random
weights go into vidformer's model through the checkpoint converters (`load_pretrained(..., strict=True)`,
the layouts `uniformer_official_video` and `dvt_official`), the logits are compared, then forward
(vidformer fused for inference as `vidformer test` runs it, and as trained) and forward+backward are
timed, the models taking turns step by step (`vidformer.engine.bench.time_alternating`), medians. DVT has
no inference fusions, so it has one forward row; both DVT sides run all three exits (the official
inference.py does too: it has no early-exit forward and applies its thresholds afterwards), and a training
step's loss is `vidformer bench`'s cross-entropy of the exits' mean logits on both sides (the official
main.py sums one per exit: the same backward through every exit). On a shared machine `--threads 1` gives
steadier ratios: two threads on two busy cores spend much of a step waiting for each other.

Running the official code on current torch/timm needs two shims, both here and both only for the import:
- UniFormer's model file imports PySlowFast's registry and logger (`slowfast.models.build`,
  `slowfast.utils.logging`, which needs simplejson and the whole model zoo behind `slowfast.models`); they
  are stood in for by a no-op registry and the standard logger. Its config is PySlowFast's own defaults
  (`slowfast/config/defaults.py`) merged with the repository's `exp/uniformer_s8x8_k400/config.yaml`.
  The installed timm (1.x) serves its `timm.models.layers` imports (deprecated path, still there).
- DVT ships its own modified timm 0.3.2 (`timm/` in the repository; the cascade's blocks live in its
  vision_transformer.py), so that copy is imported in place of the installed timm, which is put back
  afterwards. It imports `torch._six.container_abcs`, gone since torch 2.0: a stand-in module gives it
  `collections.abc`. Its blocks build a zeros tensor with `.cuda()`; on a CPU that call is made a
  no-op move to the bench device while the official model runs.
"""

import argparse
import collections.abc
import contextlib
import copy
import functools
import importlib
import importlib.util
import logging
import os
import sys
import types
import warnings

import torch
from torch import nn

from vidformer.checkpoint import load_pretrained
from vidformer.engine.bench import DTYPES, make_step, time_alternating
from vidformer.errors import UsageError
from vidformer.layers import fuse_for_inference
from vidformer.models import create_model

UNIFORMER_MODEL = "video_classification/slowfast/models/uniformer.py"
UNIFORMER_CONFIG = "video_classification/exp/uniformer_s8x8_k400/config.yaml"
DVT_MODEL = "models_deit.py"
DVT_TIMM = "timm/models/vision_transformer.py"
UNIFORMER_PROJECT = "github.com/Sense-X/UniFormer"
DVT_PROJECT = "github.com/blackfeather-wang/Dynamic-Vision-Transformer"
# --quick: a tiny UniFormer (official config keys) on 4 x 64 x 64 clips; DVT keeps DeiT-S at 224 (its
# builders fix the width and its code hard-codes the 10x10 / 14x14 grids) with one image
QUICK_UNIFORMER = {"DEPTH": [1, 1, 1, 1], "EMBED_DIM": [16, 16, 32, 32], "HEAD_DIM": 16}


def check_checkout(path: str, flag: str, project: str, files: tuple[str, ...]) -> str:
    """`path` if it holds every file in `files`; otherwise a UsageError naming the path and the file."""
    for rel in files:
        if not os.path.isfile(os.path.join(path, rel)):
            raise UsageError(f"{flag} {path}: no {rel} there; expected a checkout of {project}")
    return path


# --------------------------------------------------------------------------------------------------
# The official models, imported from the user's checkouts

def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


class _NoRegistry:
    """Stands in for PySlowFast's MODEL_REGISTRY: `@register()` leaves the class as it is."""

    def register(self):
        return lambda cls: cls


def official_uniformer(repo: str, quick: bool):
    """The official Uniformer class's model for the S-8x8 Kinetics config (tiny with `quick`), and the config."""
    root = os.path.join(repo, "video_classification", "slowfast")
    # package stand-ins whose __init__ is not run (it imports every PySlowFast model and its dependencies)
    _module("slowfast", __path__=[root])
    _module("slowfast.models", __path__=[os.path.join(root, "models")])
    _module("slowfast.config", __path__=[os.path.join(root, "config")])
    _module("slowfast.utils", __path__=[os.path.join(root, "utils")])
    _module("slowfast.models.build", MODEL_REGISTRY=_NoRegistry())
    _module("slowfast.utils.logging", get_logger=logging.getLogger)
    spec = importlib.util.spec_from_file_location("slowfast.models.uniformer", os.path.join(repo, UNIFORMER_MODEL))
    code = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm 1.x: "Importing from timm.models.layers is deprecated"
        spec.loader.exec_module(code)
    cfg = importlib.import_module("slowfast.config.defaults").get_cfg()
    cfg.merge_from_file(os.path.join(repo, UNIFORMER_CONFIG))
    if quick:
        cfg.UNIFORMER.update(QUICK_UNIFORMER)
    return code.Uniformer(cfg), cfg


def _timm_modules() -> dict:
    return {k: m for k, m in sys.modules.items() if k == "timm" or k.startswith("timm.")}


def official_dvt(repo: str, num_classes: int, drop_path_rate: float) -> nn.Module:
    """The official DVT_Deit_small cascade, built with its repository's own timm."""
    installed = _timm_modules()
    for name in installed:
        del sys.modules[name]
    six = _module("torch._six", container_abcs=collections.abc, string_classes=(str, bytes), int_classes=int)
    sys.path.insert(0, repo)
    try:
        with warnings.catch_warnings():
            # its timm scripts a function, and torch.jit.script is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            code = importlib.import_module("models_deit")
    finally:
        sys.path.remove(repo)
        for name in _timm_modules():
            del sys.modules[name]
        sys.modules.update(installed)
        if sys.modules.get("torch._six") is six:
            del sys.modules["torch._six"]
    return code.DVT_Deit_small(num_classes=num_classes, drop_path_rate=drop_path_rate)


@contextlib.contextmanager
def cuda_calls_stay_on(device: torch.device):
    """Tensor.cuda() moves to `device` instead, so the official DVT's `torch.zeros(...).cuda()` runs on a CPU."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(device)
    try:
        yield
    finally:
        torch.Tensor.cuda = original


class ClipList(nn.Module):
    """PySlowFast models take a list of pathway tensors; UniFormer has one pathway."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model([x])


class AllExits(nn.Module):
    """vidformer's DVT returning every exit's logits, as the official cascade's forward does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_exits(x)


# --------------------------------------------------------------------------------------------------
# The pairs

def uniformer_pair(repo: str, args) -> tuple[nn.Module, nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    official, cfg = official_uniformer(repo, args.quick)
    u = cfg.UNIFORMER
    if u.SPLIT or u.STD or u.QKV_SCALE is not None or u.REPRESENTATION_SIZE:
        raise UsageError(f"{UNIFORMER_CONFIG}: UNIFORMER.SPLIT/STD/QKV_SCALE/REPRESENTATION_SIZE set; "
                         "vidformer's uniformer_s has none of these variants")
    frames, size = (4, 64) if args.quick else (args.frames, args.img_size)
    ours = create_model("uniformer_s", num_classes=cfg.MODEL.NUM_CLASSES, num_frames=frames, img_size=size,
                        drop_path_rate=u.DROP_DEPTH_RATE, depths=tuple(u.DEPTH), dims=tuple(u.EMBED_DIM),
                        head_dim=u.HEAD_DIM, mlp_ratio=float(u.MLP_RATIO), qkv_bias=u.QKV_BIAS)
    report = load_pretrained(ours, official.state_dict(), strict=True)
    x = torch.randn(args.batch, 3, frames, size, size)
    what = (f"uniformer_s {'(tiny, --quick) ' if args.quick else ''}{tuple(x.shape)} against the official "
            f"Uniformer ({UNIFORMER_CONFIG}); its weights loaded strictly, layout '{report.layout}'")
    return ours, ClipList(official), x, what


def dvt_pair(repo: str, args) -> tuple[nn.Module, nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    # 1000 classes and drop path 0.1: the official main.py's ImageNet defaults
    official = official_dvt(repo, num_classes=1000, drop_path_rate=0.1)
    ours = create_model("dvt_deit_s", num_classes=1000, num_frames=1, img_size=224, drop_path_rate=0.1)
    report = load_pretrained(ours, official.state_dict(), strict=True)
    x = torch.randn(1 if args.quick else args.dvt_batch, 3, 224, 224)
    what = (f"dvt_deit_s image cascade {tuple(x.shape)}, all 3 exits, against the official DVT_Deit_small, "
            f"its weights loaded strictly, layout '{report.layout}'")
    return AllExits(ours), official, x, what


# --------------------------------------------------------------------------------------------------
# Logits and timings

def _exits(out) -> list[torch.Tensor]:
    return [o.float() for o in out] if isinstance(out, (list, tuple)) else [out.float()]


def max_abs_diff(ours: nn.Module, official: nn.Module, x: torch.Tensor, official_context) -> tuple[float, float]:
    """max |ours - official| over every exit's eval-mode logits, and max |official| for scale."""
    ours.eval(), official.eval()
    with torch.no_grad():
        a = _exits(ours(x))
        with official_context():
            b = _exits(official(x))
    diff = max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))
    return diff, max(q.abs().max().item() for q in b)


def compare(name: str, ours: nn.Module, official: nn.Module, x: torch.Tensor, what: str, args, log=print) -> dict:
    device = torch.device(args.device)
    ours.to(device), official.to(device)
    x = x.to(device)
    context = functools.partial(cuda_calls_stay_on, device) if device.type == "cpu" else contextlib.nullcontext
    log(f"{name}: {what}")
    # models without inference fusions (DVT) run in `vidformer test` as trained: one forward row
    variants = {"forward": ours}
    if any(hasattr(m, "fuse_") for m in ours.modules()):
        variants = {"forward (fused)": fuse_for_inference(copy.deepcopy(ours)), "forward (as trained)": ours}
    scale = 0.0
    for mode, model in variants.items():
        diff, scale = max_abs_diff(model, official, x, context)
        log(f"  logits, {mode}: max |ours - official| {diff:.2e} (max |logit| {scale:.3g})")
        if not diff < 1e-3 * max(scale, 1e-12):
            raise RuntimeError(f"{name}: the logits differ from the official model's (max |diff| {diff:.2e}, "
                               f"max |logit| {scale:.3g}); the timings would compare different models")
    forward = [make_step(m, x, "forward", args.dtype) for m in variants.values()]
    *t_ours, t_official = time_alternating([*forward, make_step(official, x, "forward", args.dtype, context)],
                                           device, args.warmup, args.iters)
    rows = {mode: (t, t_official) for mode, t in zip(variants, t_ours)}
    train = [make_step(ours, x, "train", args.dtype), make_step(official, x, "train", args.dtype, context)]
    rows["forward+backward"] = time_alternating(train, device, args.warmup, args.iters)
    for mode, (mine, theirs) in rows.items():
        log(f"  {mode:20s} {mine:8.3f} s vs official {theirs:8.3f} s per step: {theirs / mine:.2f}x")
    return {mode: {"ours_s": m, "official_s": t, "speedup": t / m} for mode, (m, t) in rows.items()}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uniformer-repo", metavar="PATH", help=f"checkout of {UNIFORMER_PROJECT}")
    p.add_argument("--dvt-repo", metavar="PATH", help=f"checkout of {DVT_PROJECT}")
    p.add_argument("--quick", action="store_true", help="tiny UniFormer, one DVT image, one timed step")
    p.add_argument("--frames", type=int, default=8, help="UniFormer clip length")
    p.add_argument("--img-size", type=int, default=224, help="UniFormer crop (DVT's official code fixes 224)")
    p.add_argument("--batch", type=int, default=1, help="UniFormer clips per step")
    p.add_argument("--dvt-batch", type=int, default=4, help="DVT images per step")
    p.add_argument("--iters", type=int, default=None, help="timed steps per side (default 5, --quick 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = 1 if args.quick else 5
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not (args.uniformer_repo or args.dvt_repo):
            raise UsageError("name at least one official checkout: --uniformer-repo PATH and/or --dvt-repo PATH")
        pairs = []
        if args.uniformer_repo:
            repo = check_checkout(args.uniformer_repo, "--uniformer-repo", UNIFORMER_PROJECT,
                                  (UNIFORMER_MODEL, UNIFORMER_CONFIG))
            pairs.append(("uniformer", functools.partial(uniformer_pair, repo)))
        if args.dvt_repo:
            repo = check_checkout(args.dvt_repo, "--dvt-repo", DVT_PROJECT, (DVT_MODEL, DVT_TIMM))
            pairs.append(("dvt", functools.partial(dvt_pair, repo)))
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: no CUDA device is available")
    except UsageError as e:
        print(f"bench_official: error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {args.dtype}; "
          f"medians of {args.iters} steps per side after {args.warmup} warmup, the sides taking turns")
    for name, build in pairs:
        compare(name, *build(args), args)
        if name == "dvt":
            print("  early exit: the official code has no early-exit forward (its inference.py runs every exit "
                  "on every image and applies the thresholds afterwards), so the cascade is compared whole")
    return 0


if __name__ == "__main__":
    sys.exit(main())
