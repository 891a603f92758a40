"""`vidformer bench`: model throughput and peak memory against a reference measured in the same run, data
loading speed, and the machine's dense matmul rate as the ceiling every model's FLOP rate is compared with.

References, holding the same weights: mvitv2_* video models run against torchvision's MViT (explicit
attention); image runs (--frames 1) of poolformer_* against timm's PoolFormer and of cvt_13/cvt_21 against
transformers' CvT, where those are installed. Every other model runs against itself with attention forced
to torch's MATH backend, the explicit softmax(QK^T + bias) V with the full attention matrix in memory.
Forward steps time vidformer fused for inference (vidformer.layers.fuse_for_inference), as `vidformer
test` and the recognizer run it; --no-fuse times the model as trained. Timings alternate between the two
models step by step, so load from other processes on a shared machine hits both alike; medians are
reported. Peak memory of a training step is measured in a fresh subprocess per configuration (see
`_memory_probe`). With `compile` both sides are torch.compile'd alike, per configuration from a clean dynamo
cache; the first call (the compile and one step) is timed apart and the warmup steps follow it.
"""

import ast
import contextlib
import copy
import dataclasses
import difflib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vidformer.checkpoint import load_pretrained
from vidformer.config import check_compile_settings
from vidformer.engine.build import compile_options
from vidformer.errors import UsageError
from vidformer.flops import count_flops, model_flops
from vidformer.layers import fuse_for_inference
from vidformer.models import create_model, list_models

DEFAULT_MODELS = ("mvitv2_s", "uniformer_s", "poolformer_s12", "cvt_13", "dvt_deit_s")
MODES = ("forward", "train")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# family kwargs that shrink each model to a few thousand parameters for `--quick` (a smoke test)
QUICK_OVERRIDES = {
    "mvitv2": {"depths": (1, 1), "embed_dim": 16, "num_heads": 1},
    "uniformer": {"depths": (1, 1, 1, 1), "dims": (16, 16, 32, 32), "head_dim": 16},
    "poolformer": {"depths": (1, 1, 1, 1), "dims": (8, 16, 16, 32)},
    "cvt": {"embed_dims": (16, 16, 32), "depths": (1, 1, 1), "num_heads": (1, 1, 2)},
    "dvt": {"embed_dim": 32, "depth": 2, "num_heads": 2},
}
MEMORY_METHOD = {
    "cpu": "peak RSS (VmHWM, reset through /proc/self/clear_refs after the model is built) minus the RSS "
           "before the first step, in a fresh subprocess per configuration: one warmup step and one measured step",
    "cuda": "torch.cuda.max_memory_allocated minus the memory allocated before the first step",
}


@dataclass
class BenchSettings:
    models: tuple[str, ...] = DEFAULT_MODELS
    frames: int = 16
    img_size: int = 224
    batch: int = 1
    iters: int = 5
    warmup: int = 2
    modes: tuple[str, ...] = MODES
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    device: str = "cpu"
    memory: bool = True
    data: bool = True
    quick: bool = False
    fuse: bool = True  # forward steps run vidformer fused for inference, as `vidformer test` and the recognizer do
    matmul_size: int = 2048
    num_classes: int = 400
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    compile: bool = False  # torch.compile both sides with compile_backend and compile_mode
    compile_backend: str = "inductor"
    compile_mode: str = "default"
    # (frames, img_size, batch) per run of every model; empty: the one shape above
    shapes: tuple[tuple[int, int, int], ...] = ()

    def compile_options(self) -> dict | None:
        """torch.compile's keyword arguments, or None when the bench runs eager."""
        return compile_options(self.compile_backend, self.compile_mode) if self.compile else None

    @classmethod
    def quick_settings(cls, **changes) -> "BenchSettings":
        """Tiny shapes and two timed steps: a smoke test of the whole bench in seconds."""
        base = dict(frames=4, img_size=32, batch=1, iters=2, warmup=1, matmul_size=256, num_classes=10, quick=True)
        return cls(**{**base, **changes})


# --------------------------------------------------------------------------------------------------
# Models and their references

def _overrides(name: str, quick: bool) -> dict:
    if not quick:
        return {}
    family = next((f for f in QUICK_OVERRIDES if name.startswith(f)), None)
    if family is None:
        raise UsageError(f"bench --quick has no tiny settings for '{name}'; known families: {sorted(QUICK_OVERRIDES)}")
    return QUICK_OVERRIDES[family]


def _build(name: str, s: BenchSettings) -> nn.Module:
    return create_model(name, num_classes=s.num_classes, num_frames=s.frames, img_size=s.img_size,
                        **_overrides(name, s.quick))


def torchvision_mvit(model: nn.Module, frames: int, img_size: int) -> tuple[nn.Module, str]:
    """torchvision's MViT with the geometry of a vidformer MViTv2 video model, and its name.

    mvitv2_s at 16x224 is exactly `mvit_v2_s()`; any other geometry (quick shapes) is torchvision's MViT
    class fed with the same per-block configs, which is what `mvit_v2_s` does for its own.
    """
    from torchvision.models.video import mvit

    if frames == 16 and img_size == 224 and model.depths == (1, 2, 11, 2) and model.block_cfgs[0].dim_in == 96:
        return mvit.mvit_v2_s(num_classes=model.num_classes), "torchvision mvit_v2_s"
    blocks = [mvit.MSBlockConfig(c.num_heads, c.dim_in, c.dim_out, list(c.kernel), list(c.kernel), list(c.stride_q),
                                 list(c.stride_kv)) for c in model.block_cfgs]
    ref = mvit.MViT((img_size, img_size), frames, blocks, residual_pool=True, residual_with_cls_embed=False,
                    rel_pos_embed=True, proj_after_attn=True, num_classes=model.num_classes)
    return ref, "torchvision MViT (mvit_v2_s code, these block configs)"


def image_peer(model: nn.Module, name: str) -> tuple[nn.Module, str] | None:
    """The installed peer implementation of an image model (timm PoolFormer, transformers CvT), or None.

    The peer is built with the model's geometry and random weights; the caller copies them into vidformer
    through the checkpoint converters (the layouts `timm_poolformer` and `cvt_huggingface`).
    """
    if name.startswith("poolformer") and all(c.mixer == "pool" for c in model.stage_cfgs):
        with contextlib.suppress(ImportError):
            import timm

            if name in timm.list_models("poolformer_*"):
                return timm.create_model(name, num_classes=model.num_classes), f"timm {name}"
    if name.startswith("cvt"):
        with contextlib.suppress(ImportError):
            import transformers

            depths = {"cvt_13": [1, 2, 10], "cvt_21": [1, 4, 16]}.get(name)
            if depths is not None:
                config = transformers.CvtConfig(num_labels=model.num_classes, depth=depths)
                return _HFLogits(transformers.CvtForImageClassification(config)), f"transformers Cvt ({name})"
    return None


class _HFLogits(nn.Module):
    """A transformers classifier returning its logits tensor (its forward returns an output object)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


@dataclass
class Pair:
    """The model under test and its reference; `ref_context` wraps every reference call."""

    name: str
    ours: nn.Module
    ref: nn.Module
    ref_name: str
    ref_context: object = contextlib.nullcontext


def _math_attention():
    return sdpa_kernel(SDPBackend.MATH)


def build_pair(name: str, s: BenchSettings) -> Pair:
    """vidformer holding the peer's random weights (torchvision MViT for mvitv2 video models, timm PoolFormer
    and transformers CvT for images) where one is installed; else the model and its naive-attention form."""
    torch.manual_seed(0)
    ours = _build(name, s)
    peer = None
    if name.startswith("mvitv2") and s.frames > 1:
        peer = torchvision_mvit(ours, s.frames, s.img_size)
    elif s.frames == 1 and not s.quick:
        peer = image_peer(ours, name)
    if peer is None:
        return Pair(name, ours, ours, "same model, attention forced to SDPA MATH (explicit softmax(QK^T)V)",
                    _math_attention)
    ref, ref_name = peer
    load_pretrained(ours, (ref.model if isinstance(ref, _HFLogits) else ref).state_dict(), strict=True)
    return Pair(name, ours, ref, ref_name)


def bench_input(s: BenchSettings, device: torch.device) -> torch.Tensor:
    """(B, 3, T, H, W) clips, or (B, 3, H, W) images when T = 1 (what image peers take)."""
    shape = (s.batch, 3, s.frames, s.img_size, s.img_size) if s.frames > 1 else (s.batch, 3, s.img_size, s.img_size)
    return torch.randn(shape, device=device)


def _logits(out) -> torch.Tensor:
    # DVT returns one logit tensor per exit in training; every exit is trained
    return torch.stack([o.float() for o in out]).mean(0) if isinstance(out, (list, tuple)) else out.float()


def parity(pair: Pair, x: torch.Tensor) -> float:
    """max |ours - reference| / max |reference| of the eval-mode fp32 logits; raises if they are not the same model."""
    pair.ours.eval(), pair.ref.eval()
    with torch.no_grad():
        a = _logits(pair.ours(x))
        with pair.ref_context():
            b = _logits(pair.ref(x))
    rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    if not rel < 1e-3:
        raise RuntimeError(f"{pair.name} and its reference ({pair.ref_name}) disagree: relative max diff {rel:.2e}")
    return rel


def _in_context(model: nn.Module, context):
    def call(x: torch.Tensor):
        with context():
            return model(x)

    return call


def make_step(model: nn.Module, x: torch.Tensor, mode: str, dtype: str, context=contextlib.nullcontext,
              compile_with: dict | None = None):
    """A closure running one forward (eval, no grad) or one forward+backward (train mode) of `model` on `x`.

    The closure sets the train/eval flag itself: the naive reference is the same module as the model.
    compile_with (torch.compile's keyword arguments) compiles the call with `context` inside it: dynamo does not
    guard on the SDPA backend that a context outside the compiled region selects, so a reference sharing our
    module would run our graph.
    """
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    run = _in_context(model, context)
    if compile_with is not None:
        run = torch.compile(run, **compile_with)

    def autocast():
        return torch.autocast(x.device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")

    def forward():
        model.eval()
        with torch.no_grad(), autocast():
            run(x)

    def train():
        model.train()
        with autocast():
            loss = F.cross_entropy(_logits(run(x)), target)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return forward if mode == "forward" else train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(steps, device: torch.device, warmup: int, iters: int) -> list[float]:
    """Median seconds per call of each step, the steps taking turns so shared-machine load hits all alike."""
    times = [[] for _ in steps]
    for i in range(warmup + iters):
        for step, record in zip(steps, times):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


# --------------------------------------------------------------------------------------------------
# Peak memory: one fresh process per configuration, so nothing another configuration allocated counts

def _rss_bytes(field_name: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field_name + ":"))
    return int(line.split()[1]) * 1024


def _memory_probe(spec: dict) -> float:
    """Peak memory (MB) of one step of the configuration `spec`, run in this process."""
    s = BenchSettings(**spec["settings"])
    torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    pair = build_pair(spec["model"], s)
    model, context = (pair.ours, contextlib.nullcontext) if spec["side"] == "ours" else (pair.ref, pair.ref_context)
    del pair  # frees the other model (the reference only lent its weights)
    model.to(device)
    x = bench_input(s, device)
    step = make_step(model, x, spec["mode"], spec["dtype"], context, s.compile_options())
    if s.compile:
        step()  # the compile's own memory is not the step's
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(), step()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base = _rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0), so building the models does not count
    step(), step()
    return (_rss_bytes("VmHWM") - base) / 2**20


def peak_memory_mb(model: str, side: str, mode: str, dtype: str, s: BenchSettings) -> float:
    spec = dict(model=model, side=side, mode=mode, dtype=dtype, settings=asdict(s))
    proc = subprocess.run([sys.executable, "-m", "vidformer.engine.bench", repr(spec)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {model} ({side}, {mode}, {dtype}) failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# The ceiling: dense matmul

def matmul_rate(dtype: str, max_n: int, device: torch.device, iters: int = 5) -> dict:
    """Median rate of an n x n x n torch.mm: GMAC/s (the models' FLOP convention) and GFLOP/s (2 per MAC).

    n doubles from 256 up to max_n while one product takes under 0.2 s: CPUs without native bf16 run bf16
    matmuls 10-50x slower than fp32, and a 2048^3 product would then take most of a minute.
    """
    n = 256
    while True:
        a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
        (seconds,) = time_alternating([lambda: torch.mm(a, a)], device, warmup=1, iters=1)
        if n >= max_n or seconds > 0.2:
            break
        n *= 2
    (seconds,) = time_alternating([lambda: torch.mm(a, a)], device, warmup=1, iters=iters)
    gmacs = n ** 3 / seconds / 1e9
    return {"n": n, "seconds": seconds, "gmacs_per_s": gmacs, "gflops_per_s": 2 * gmacs}


# --------------------------------------------------------------------------------------------------
# Data loading: the data pipeline's own benchmark

def data_benchmark(quick: bool, log=print) -> dict:
    """Train-sampling clips/s per worker and multi-view seconds per video, from `vidformer.data.bench` if present."""
    try:
        from vidformer.data.bench import run_data_benchmark
    except ImportError as e:
        return {"skipped": f"no data benchmark to call ({e})"}
    return run_data_benchmark(quick=quick, log=log)


# --------------------------------------------------------------------------------------------------
# The run

def bench_model(name: str, s: BenchSettings, ceilings: dict, log=print) -> dict:
    device = torch.device(s.device)
    pair = build_pair(name, s)
    pair.ours.to(device), pair.ref.to(device)
    x = bench_input(s, device)
    diff = parity(pair, x)
    # the forward steps time vidformer as inference runs it: fused (a copy: training steps use the model)
    infer = fuse_for_inference(copy.deepcopy(pair.ours)) if s.fuse else pair.ours
    if s.fuse:
        diff = max(diff, parity(Pair(name, infer, pair.ref, pair.ref_name, pair.ref_context), x))
    ours_gmacs = model_flops(pair.ours, s.frames, s.img_size).gflops
    # the FLOP rate counts the model's nominal work, the reference's count: operations a faster path adds
    # (padding, folded bias terms) are overhead, not work done
    gmacs = ours_gmacs if pair.ref is pair.ours else count_flops(pair.ref, x[:1])
    log(f"{name}: reference {pair.ref_name}; logits agree to {diff:.1e} (relative); {gmacs:.4g} GFLOPs per clip "
        f"({ours_gmacs:.4g} as vidformer computes it)")
    rows = []
    for mode in s.modes:
        # forward+backward costs about 3 forwards (the backward computes input and weight gradients)
        macs_per_clip = gmacs * (3 if mode == "train" else 1)
        for dtype in s.dtypes:
            if s.compile:
                torch._dynamo.reset()  # each configuration compiles anew (and dynamo's cache stays under its limit)
            compile_with = s.compile_options()
            ours = infer if mode == "forward" else pair.ours
            steps = [make_step(ours, x, mode, dtype, compile_with=compile_with),
                     make_step(pair.ref, x, mode, dtype, pair.ref_context, compile_with)]
            # the first call compiles, then runs one step
            first = [time_alternating([step], device, warmup=0, iters=1)[0] for step in steps] if s.compile else [None] * 2
            t_ours, t_ref = time_alternating(steps, device, s.warmup, s.iters)
            row = {"mode": mode, "dtype": dtype}
            for side, seconds, first_call in (("ours", t_ours, first[0]), ("reference", t_ref, first[1])):
                clips = s.batch / seconds
                row[side] = {"seconds": seconds, "clips_per_s": clips,
                             "matmul_fraction": macs_per_clip * clips / ceilings[dtype]["gmacs_per_s"]}
                if first_call is not None:
                    row[side] |= {"first_call_s": first_call, "compile_s": first_call - seconds}
                if s.memory and mode == "train":
                    row[side]["peak_mem_mb"] = peak_memory_mb(name, side, mode, dtype, s)
            row["speedup"] = t_ref / t_ours
            if s.memory and mode == "train":
                row["memory_ratio"] = row["ours"]["peak_mem_mb"] / max(row["reference"]["peak_mem_mb"], 1e-9)
            compiled = (f"; compile {row['ours']['compile_s']:.1f} s vs {row['reference']['compile_s']:.1f} s"
                        if s.compile else "")
            log(f"  {mode:7s} {dtype}: {row['ours']['clips_per_s']:.3f} vs {row['reference']['clips_per_s']:.3f} "
                f"clips/s ({row['speedup']:.2f}x){compiled}")
            rows.append(row)
    return {"model": name, "reference": pair.ref_name, "input": list(x.shape), "gflops_per_clip": gmacs,
            "gflops_computed": ours_gmacs, "parity_rel_diff": diff, "results": rows}


def _machine(s: BenchSettings) -> dict:
    info = {"device": s.device, "threads": s.threads, "torch": torch.__version__, "python": platform.python_version(),
            "processor": _cpu_name()}
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if s.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(s.device))
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return platform.processor()


def each_shape(s: BenchSettings) -> list[BenchSettings]:
    """The settings of each run: one per entry of `s.shapes` (frames, img_size, batch), or `s` itself."""
    return [dataclasses.replace(s, frames=t, img_size=size, batch=b) for t, size, b in s.shapes] or [s]


def parse_shape(text: str) -> tuple[int, int, int]:
    """'16x224' or '16x224x2' (frames x crop [x batch]) -> (16, 224, 1) / (16, 224, 2)."""
    parts = text.lower().split("x")
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"bench --shapes: '{text}' is not FRAMESxCROP or FRAMESxCROPxBATCH (e.g. 16x224 or 8x112x4)")
    frames, size, batch = (int(p) for p in parts + ["1"] * (3 - len(parts)))
    return frames, size, batch


def run_bench(s: BenchSettings, log=print) -> dict:
    unknown = [m for m in s.models if m not in list_models()]
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, list_models(), n=1, cutoff=0.5)]
        hint = f"; did you mean {', '.join(close)}?" if close else "."
        raise UsageError(f"bench: unknown model(s) {unknown}{hint} Registered: {', '.join(list_models())}")
    bad = [m for m in s.modes if m not in MODES] + [d for d in s.dtypes if d not in DTYPES]
    if bad:
        raise UsageError(f"bench: unknown mode/dtype {bad}; modes {MODES}, dtypes {tuple(DTYPES)}")
    check_compile_settings(s.compile_backend, s.compile_mode, keys=("--compile-backend", "--compile-mode"))
    torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    ceilings = {d: matmul_rate(d, s.matmul_size, device) for d in s.dtypes}
    for d, c in ceilings.items():
        log(f"matmul {d} {c['n']}^3: {c['gflops_per_s']:.1f} GFLOP/s = {c['gmacs_per_s']:.1f} GMAC/s")
    memory_method = MEMORY_METHOD[device.type] + ("; under compile, the compiling first call runs before the "
                                                  "baseline is read" if s.compile else "")
    result = {"machine": _machine(s), "settings": asdict(s), "memory_method": memory_method,
              "flop_convention": "GFLOPs per clip count one multiply-add as one FLOP (fvcore); fractions are of "
                                 "the matmul rate in the same units; forward+backward counted as 3x forward",
              "matmul": ceilings,
              "models": [bench_model(m, shape, ceilings, log) for m in s.models for shape in each_shape(s)]}
    result["data"] = data_benchmark(s.quick, log) if s.data else {"skipped": "--no-data"}
    return result


def _shape(input_shape: list[int]) -> str:
    """(B, 3, T, H, W) -> 'TxHxB'; images (B, 3, H, W) -> '1xHxB'."""
    frames = input_shape[2] if len(input_shape) == 5 else 1
    return f"{frames}x{input_shape[-1]}x{input_shape[0]}"


def format_table(result: dict) -> str:
    """One line per (model, mode, dtype): clips/s of both sides, their ratio, peak memory and FLOP rate."""
    head = (f"{'model':16s} {'input':>10s} {'mode':7s} {'dtype':5s} {'clips/s':>9s} {'ref':>9s} {'speedup':>7s} "
            f"{'mem MB':>8s} {'ref MB':>8s} {'mem x':>6s} {'%peak':>6s} {'ref%':>6s}")
    lines = [head, "-" * len(head)]
    for m in result["models"]:
        for r in m["results"]:
            ours, ref = r["ours"], r["reference"]
            mem = (f"{ours['peak_mem_mb']:8.0f} {ref['peak_mem_mb']:8.0f} {r['memory_ratio']:6.2f}"
                   if "memory_ratio" in r else f"{'-':>8s} {'-':>8s} {'-':>6s}")
            lines.append(f"{m['model']:16s} {_shape(m['input']):>10s} {r['mode']:7s} {r['dtype']:5s} {ours['clips_per_s']:9.3f} "
                         f"{ref['clips_per_s']:9.3f} {r['speedup']:6.2f}x {mem} {100 * ours['matmul_fraction']:5.1f}% "
                         f"{100 * ref['matmul_fraction']:5.1f}%")
    lines.append("references: " + "; ".join(dict.fromkeys(f"{m['model']}: {m['reference']}" for m in result["models"])))
    settings = result["settings"]
    if settings["compile"]:
        lines.append(f"torch.compile, both sides (backend {settings['compile_backend']}, mode {settings['compile_mode']}); "
                     "compile seconds (first call less one step), ours / reference: " + "; ".join(
                         f"{m['model']} {r['mode']} {r['dtype']} {r['ours']['compile_s']:.1f} / "
                         f"{r['reference']['compile_s']:.1f}" for m in result["models"] for r in m["results"]))
    data = result["data"]
    if "skipped" in data:
        lines.append(f"data loading: skipped ({data['skipped']})")
    else:
        from vidformer.data.bench import format_table as data_table

        lines += ["", "data loading:", data_table(data)]
    return "\n".join(lines)


def run_from_args(args) -> int:
    """`vidformer bench`: the parsed command line -> table on stdout, JSON to `args.json`."""
    registered = list_models()
    models = tuple(args.models) if args.models else tuple(m for m in DEFAULT_MODELS if m in registered)
    given = dict(models=models, batch=args.batch, modes=tuple(args.modes), dtypes=tuple(args.dtypes),
                 memory=not args.no_memory, data=not args.no_data, frames=args.frames, img_size=args.img_size,
                 iters=args.iters, device=args.device, threads=args.threads, fuse=not args.no_fuse,
                 compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode,
                 shapes=tuple(parse_shape(t) for t in args.shapes) if args.shapes else None)
    # flags left out take the defaults of the full or the --quick bench
    given = {k: v for k, v in given.items() if v is not None}
    s = BenchSettings.quick_settings(**given) if args.quick else BenchSettings(**given)
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"bench --device {s.device}: no CUDA device is available")
    result = run_bench(s, log=lambda msg: print(msg, file=sys.stderr))
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    # `python -m vidformer.engine.bench SPEC`: the memory probe's subprocess (SPEC is a dict literal)
    print(_memory_probe(ast.literal_eval(sys.argv[1])))
