"""The training loop: one config in, checkpoints, logs and a trained model out.

One process or many (DDP under torchrun / srun); AdamW or SGD with a per-step warmup + cosine
schedule; mixed precision (bf16, or fp16 with loss scaling) with attention optionally kept in fp32;
gradient accumulation (the non-final micro-batches of a window run forward and backward under DDP's
no_sync, so one all-reduce per optimizer step) and clipping; label smoothing / mixup targets; an EMA
of the weights; a torch.compile'd forward under MODEL.COMPILE; single-view validation every
TRAIN.EVAL_PERIOD epochs; atomic checkpoints holding everything needed for an exact resume (model,
optimizer, schedule, scaler, EMA, epoch, step, the position in the epoch, every rank's RNG states).

A run survives its cluster: SIGTERM or SIGUSR1 (preemption, Slurm's `--signal=USR1@120`) lets the
current optimizer step finish, writes a mid-epoch checkpoint and makes `fit` return with `stopped`
set (the CLI then exits with STOPPED_EXIT_CODE); the same command resumes from that point and ends
with the weights an uninterrupted run has. TRAIN.CHECKPOINT_MINUTES adds time-based checkpoints,
TRAIN.CHECKPOINT_KEEP bounds how many stay. Auto-resume takes the newest checkpoint that loads.
A non-finite loss or non-finite gradients skip the step on every rank; TRAIN.MAX_NONFINITE_STEPS in
a row stop the run, and weights that are not finite are never written to a checkpoint.
"""

import contextlib
import copy
import os
import random
import re
import signal
import threading
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vidformer.checkpoint import load_pretrained
from vidformer.checkpoint.io import load_checkpoint_file, remove_stale_temps, save_checkpoint
from vidformer.data import build_loader as build_video_loader
from vidformer.data.loader import VideoLoader
from vidformer.engine import distributed as du
from vidformer.engine.build import build_model, cfg_compile_options
from vidformer.engine.optim import WarmupCosine, build_optimizer, scaled_lrs
from vidformer.engine.runlog import JsonLines, Scalars, fmt_value, log_to_file, progress, setup_logging
from vidformer.errors import UsageError
from vidformer.layers import attention_in_fp32

CHECKPOINT_DIR = "checkpoints"
# checkpoint_epoch_00003.pyth: after 3 epochs; checkpoint_epoch_00003_iter_000120.pyth: 120 batches into the 4th
_CHECKPOINT_NAME = re.compile(r"^checkpoint_epoch_(\d+)(?:_iter_(\d+))?\.pyth$")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Exit code of `vidformer train` after SIGTERM/SIGUSR1 made it checkpoint and stop: not 0 (the run is not
# done) and not 1 or 2 (nothing failed), so a job script can requeue on exactly this code.
STOPPED_EXIT_CODE = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_TRAINING_KEYS = ("model_state", "optimizer_state", "scheduler", "scaler", "epoch", "step", "rng")
# config keys whose change makes a checkpoint another run's (its tensors or optimizer state would not fit)
_RUN_KEYS = ("MODEL.MODEL_NAME", "MODEL.NUM_CLASSES", "MODEL.OVERRIDES", "SOLVER.OPTIMIZING_METHOD")


class NonFiniteLossError(RuntimeError):
    """TRAIN.MAX_NONFINITE_STEPS consecutive skipped steps (the message names the videos or the step)."""


class NonFiniteWeightsError(RuntimeError):
    """The weights hold NaN/inf: no checkpoint is written, so a resume never starts from them."""
# ---------------------------------------------------------------------------------------------
# losses, EMA, RNG


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy against per-class target probabilities (mixup/cutmix, smoothed labels)."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Hard labels (B,) get label smoothing here; soft targets (B, K) already carry it."""
    logits = logits.float()
    if target.ndim == 2:
        return soft_cross_entropy(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


class ModelEma:
    """Exponential moving average of a model's weights: ema <- decay * ema + (1 - decay) * weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, value in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema.dtype.is_floating_point:
                ema.lerp_(value, 1.0 - self.decay)
            else:
                ema.copy_(value)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's RNG states as tensors/ints/lists (loadable with torch.load(weights_only=True))."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------
# checkpoints on disk



def checkpoint_path(output_dir: str, epoch: int, iteration: int = 0) -> str:
    """OUTPUT_DIR/checkpoints/ file after `epoch` epochs and `iteration` batches of the next one."""
    name = f"checkpoint_epoch_{epoch:05d}" + (f"_iter_{iteration:06d}" if iteration else "") + ".pyth"
    return os.path.join(output_dir, CHECKPOINT_DIR, name)


def list_checkpoints(output_dir: str) -> list[str]:
    """The checkpoints in OUTPUT_DIR/checkpoints, oldest first (by epoch, then position in the epoch)."""
    folder = os.path.join(output_dir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    found = [((int(m.group(1)), int(m.group(2) or 0)), name)
             for name in os.listdir(folder) if (m := _CHECKPOINT_NAME.match(name))]
    return [os.path.join(folder, name) for _, name in sorted(found)]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint in OUTPUT_DIR/checkpoints, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _is_mid_epoch(path: str) -> bool:
    return _CHECKPOINT_NAME.match(os.path.basename(path)).group(2) is not None


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


# ---------------------------------------------------------------------------------------------


class _Exits(nn.Module):
    """The forward pass the loss sees: every exit's logits for cascades (`forward_exits`), else [logits].

    It is what DDP wraps, so the exits' gradients are synchronised like any forward's.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(self.model, "forward_exits"):
            return list(self.model.forward_exits(x))
        return [self.model(x)]


def _set_epoch(loader, epoch: int) -> None:
    """Reshuffle and re-seed per epoch (vidformer's VideoLoader.set_epoch, else a DistributedSampler's)."""
    target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def batch_paths(loader, batch: dict) -> list[str]:
    """Video paths of a batch, from its dataset indices (the dataset's `records[index].path`)."""
    records = loader.dataset.records
    return [records[int(i)].path for i in batch["index"]]


def _new_totals() -> dict:
    """Running sums of the epoch in progress (they travel in a mid-epoch checkpoint)."""
    return {"loss_sum": 0.0, "loss_count": 0, "nonfinite_steps": 0, "nonfinite_grad_steps": 0, "clips": 0,
            "data_time_s": 0.0, "time_s": 0.0}


class Trainer:
    """Trains `cfg`'s model. `model` and `build_loader` can be given (tests, notebooks); by default they
    come from the config (`build_model`) and vidformer.data.build_loader."""

    def __init__(self, cfg: CfgNode, *, model: nn.Module | None = None, build_loader: Callable | None = None,
                 env: du.DistEnv | None = None, resume: bool | str | None = None):
        self.cfg = cfg
        self.env = env or du.DistEnv()
        self.device = du.device_for(self.env)
        self.output_dir = cfg.OUTPUT_DIR
        self.logger = setup_logging(self.output_dir, self.env.is_main)
        self.build_loader = build_loader or build_video_loader
        self._seed()
        resume_from = self._build_model(model, resume)
        self._build_loaders()
        self._build_optimization()
        self._wrap_for_training()
        self._reset_progress()
        if resume_from is not None:
            self._resume(*resume_from)
        self._open_outputs()
        self._log_setup()

    # -- set-up steps ------------------------------------------------------------------------

    def _seed(self) -> None:
        if self.cfg.DETERMINISTIC:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(self.cfg.RNG_SEED + self.env.rank)

    def _build_model(self, model: nn.Module | None, resume: bool | str | None) -> tuple[str, dict] | None:
        """The model on its device, with initial weights; returns the checkpoint to resume from, if any."""
        cfg = self.cfg
        self.model = (model if model is not None else build_model(cfg)).to(self.device)
        resume_from = self._find_resume_checkpoint(resume)
        if cfg.TRAIN.CHECKPOINT_FILE_PATH and resume_from is None:
            if cfg.TRAIN.CHECKPOINT_EPOCH_RESET:
                report = load_pretrained(self.model, cfg.TRAIN.CHECKPOINT_FILE_PATH,
                                         inflate=cfg.TRAIN.CHECKPOINT_INFLATE, strict=False)
                self.logger.info(f"initial weights from {cfg.TRAIN.CHECKPOINT_FILE_PATH}\n{report}")
                report.check_fit(cfg.TRAIN.ALLOW_PARTIAL)
            else:  # PySlowFast's meaning: carry on that run's epoch, optimizer and schedule
                path = cfg.TRAIN.CHECKPOINT_FILE_PATH
                resume_from = (path, self._training_checkpoint(path))
        if self.env.distributed and cfg.BN.SYNC and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        return resume_from

    def _build_loaders(self) -> None:
        cfg, env = self.cfg, self.env
        self.train_loader = self.build_loader(cfg, "train", rank=env.rank, world_size=env.world_size,
                                              seed=cfg.RNG_SEED, local_world_size=env.processes_per_node)
        self.val_loader = None
        self.accum = cfg.TRAIN.GRAD_ACCUM_STEPS
        self.steps_per_epoch = len(self.train_loader) // self.accum
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"the training split gives {len(self.train_loader)} batches per process, fewer than "
                f"TRAIN.GRAD_ACCUM_STEPS={self.accum}; lower TRAIN.BATCH_SIZE or TRAIN.GRAD_ACCUM_STEPS")
        # TRAIN.BATCH_SIZE is per node (PySlowFast): shared by the node's processes
        self.per_process_batch = cfg.TRAIN.BATCH_SIZE // env.processes_per_node
        self.global_clips = self.per_process_batch * env.world_size * cfg.AUG.NUM_SAMPLE * self.accum

    def _build_optimization(self) -> None:
        cfg = self.cfg
        self.base_lr, start_lr, end_lr = scaled_lrs(cfg, self.global_clips)
        self.optimizer = build_optimizer(self.model, cfg, self.base_lr)
        self.schedule = WarmupCosine(
            self.optimizer, base_lr=self.base_lr, start_lr=start_lr, end_lr=end_lr,
            warmup_steps=round(cfg.SOLVER.WARMUP_EPOCHS * self.steps_per_epoch),
            total_steps=cfg.SOLVER.MAX_EPOCH * self.steps_per_epoch)
        self.amp_dtype = _AMP_DTYPES.get(cfg.TRAIN.MIXED_PRECISION)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.TRAIN.MIXED_PRECISION == "fp16")
        self.mixup = None
        if cfg.MIXUP.ENABLE:
            from vidformer.data.mixup import build_mixup

            self.mixup = build_mixup(cfg, cfg.MODEL.NUM_CLASSES)

    def _wrap_for_training(self) -> None:
        """self.forward: the training forward, compiled under MODEL.COMPILE, wrapped in DDP when distributed.

        The compile is in place (nn.Module.compile) on the _Exits wrapper, before DDP wraps it, as torch's
        "Where to apply torch.compile?" advises (torch.compile handles the DDP wrapper poorly; compile the module
        it wraps): DDP's forward still marks itself active, so dynamo's DDPOptimizer splits the graph at DDP's
        bucket boundaries, and self.model, the optimizer's parameters, the EMA and every checkpoint's keys stay
        those of the plain model (no `_orig_mod.`), so runs with and without compile resume each other.
        Validation runs self.model itself, uncompiled.
        """
        self.forward = _Exits(self.model)
        if self.cfg.MODEL.COMPILE:
            self.forward.compile(**cfg_compile_options(self.cfg))
        if self.env.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=device_ids)
        # after DDP's constructor broadcast rank 0's weights, so every rank's EMA starts equal
        self.ema = ModelEma(self.model, self.cfg.TRAIN.EMA_DECAY) if self.cfg.TRAIN.EMA_DECAY > 0 else None

    def _reset_progress(self) -> None:
        self.epoch = 0  # epochs completed
        self.iteration = 0  # batches of the epoch in progress already trained on (after a mid-epoch resume)
        self.step = 0  # optimizer steps
        self.history: list[float] = []  # mean loss over ranks of every optimizer step
        self.totals = _new_totals()
        self.nonfinite_in_a_row = 0
        self.stop_signal: str | None = None  # the signal that asked this run to stop
        self.stopped = False  # fit() returned early after a stop signal, with a checkpoint written
        self._window_skipped = False
        self._stop_agreed = self._checkpoint_due = False
        self._resume_rng: dict | None = None
        self._last_save = time.monotonic()

    def _open_outputs(self) -> None:
        folder = os.path.join(self.output_dir, CHECKPOINT_DIR)
        main = self.env.is_main
        self.jsonl = JsonLines(os.path.join(self.output_dir, "log.jsonl") if main else None)
        self.steps_jsonl = JsonLines(os.path.join(self.output_dir, "log_steps.jsonl") if main else None)
        if main:
            os.makedirs(folder, exist_ok=True)
            for path in remove_stale_temps(folder):
                self.logger.info(f"removed {path}, left by a save that was killed")
            with open(os.path.join(folder, "config.yaml"), "w") as f:
                f.write(self.cfg.dump())
            # a resumed run writes again what came after its checkpoint: drop those records, so none repeats
            self.jsonl.keep_only(lambda r: r.get("epoch", 0) <= self.epoch)
            self.steps_jsonl.keep_only(lambda r: r.get("step", 0) <= self.step)
        du.barrier()
        self.scalars = Scalars(os.path.join(self.output_dir, "tensorboard") if main else None)

    def _log_setup(self) -> None:
        cfg, env = self.cfg, self.env
        log_to_file(self.logger, f"config (merged):\n{cfg.dump()}")
        scaled = (f", scaled by {self.global_clips}/{cfg.SOLVER.REFERENCE_BATCH} (SOLVER.LR_SCALE_BY_BATCH)"
                  if cfg.SOLVER.LR_SCALE_BY_BATCH else "")
        nodes = max(env.world_size // env.processes_per_node, 1)
        self.logger.info(
            f"{cfg.MODEL.MODEL_NAME}: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M params, "
            f"{env.world_size} process(es) on {self.device.type} ({nodes} node(s)); TRAIN.BATCH_SIZE "
            f"{cfg.TRAIN.BATCH_SIZE} per node = {self.per_process_batch} per process, global batch "
            f"{self.global_clips} clips per optimizer step (x{cfg.AUG.NUM_SAMPLE} samples, x{self.accum} "
            f"accumulation); lr {self.base_lr:.3g}{scaled}; {self.steps_per_epoch} steps/epoch, "
            f"epochs {self.epoch}->{cfg.SOLVER.MAX_EPOCH}"
            + (f"; torch.compile backend {cfg.MODEL.COMPILE_BACKEND}, mode {cfg.MODEL.COMPILE_MODE}"
               if cfg.MODEL.COMPILE else ""))

    # -- resuming ----------------------------------------------------------------------------

    def _find_resume_checkpoint(self, resume: bool | str | None) -> tuple[str, dict] | None:
        """(path, contents) of the checkpoint to continue: --resume PATH, else the newest in OUTPUT_DIR that
        loads (each one skipped is said, with why), else None."""
        if isinstance(resume, str):
            if not os.path.isfile(resume):
                raise UsageError(f"--resume checkpoint '{resume}' does not exist")
            return resume, self._training_checkpoint(resume)
        if resume is False or (resume is None and not self.cfg.TRAIN.AUTO_RESUME):
            return None
        for path in reversed(list_checkpoints(self.output_dir)):
            try:
                return path, self._training_checkpoint(path)
            except UsageError as e:
                self.logger.warning(f"auto-resume skips {path}: {e}")
        return None

    @staticmethod
    def _training_checkpoint(path: str) -> dict:
        ckpt = load_checkpoint_file(path)
        missing = [k for k in _TRAINING_KEYS if k not in ckpt]
        if missing:
            raise UsageError(f"'{path}' is not a vidformer training checkpoint (no {', '.join(missing)}), so its run "
                             f"cannot be continued; to start from its weights set TRAIN.CHECKPOINT_EPOCH_RESET True")
        return ckpt

    def _check_same_run(self, path: str, ckpt: dict) -> None:
        """A checkpoint of another model or optimizer is a clear error, not a size-mismatch traceback."""
        if "cfg" not in ckpt:
            return
        theirs = CfgNode.load_cfg(ckpt["cfg"])
        differ = []
        for key in _RUN_KEYS:
            section, name = key.split(".")
            there = theirs.get(section, {}).get(name)
            here = self.cfg[section][name]
            if there is not None and there != here:
                differ.append(f"{key} {there!r} there, {here!r} here")
        if differ:
            raise UsageError(self._other_run_message(path, "; ".join(differ)))

    def _other_run_message(self, path: str, what: str) -> str:
        return (f"cannot resume from '{path}': it belongs to another run ({what}); start this one with "
                f"--no-resume (TRAIN.AUTO_RESUME False) or give it another OUTPUT_DIR")

    def _resume(self, path: str, ckpt: dict) -> None:
        self._check_same_run(path, ckpt)
        try:
            self.model.load_state_dict(ckpt["model_state"])
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UsageError(self._other_run_message(path, str(e).strip().splitlines()[-1][:300])) from None
        self.schedule.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if "ema_state" in ckpt:
                self.ema.module.load_state_dict(ckpt["ema_state"])
            else:
                self.ema.module.load_state_dict(self.model.state_dict())
                self.logger.info(f"{path} has no EMA: the EMA starts from its weights")
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.iteration = int(ckpt.get("iteration", 0))
        self.totals.update(ckpt.get("epoch_totals", {}))
        self.nonfinite_in_a_row = int(ckpt.get("nonfinite_in_a_row", 0))
        rng = ckpt["rng"]
        same_layout = len(rng) == self.env.world_size and ckpt.get("per_process_batch", self.per_process_batch) == self.per_process_batch
        if not same_layout:
            self.logger.warning(f"{path} was written by {len(rng)} process(es) with batch "
                                f"{ckpt.get('per_process_batch', '?')} each, this run has {self.env.world_size} with "
                                f"{self.per_process_batch}: random streams restart from RNG_SEED and the epoch's "
                                f"remaining samples differ (resume is not exact)")
            self.iteration -= self.iteration % self.accum
        elif self.iteration == 0:
            set_rng_state(rng[self.env.rank])
        else:  # restored once the resumed epoch's loader iterator exists (creating it draws a seed)
            self._resume_rng = rng[self.env.rank]
        where = f", iteration {self.iteration} of epoch {self.epoch + 1}" if self.iteration else ""
        self.logger.info(f"resumed from {path} (epoch {self.epoch}{where}, step {self.step})")

    # -- the loop ----------------------------------------------------------------------------

    def fit(self, *, stop_after_epoch: int | None = None) -> list[dict]:
        """Train to SOLVER.MAX_EPOCH (or stop after `stop_after_epoch`); returns this run's epoch records.
        After SIGTERM/SIGUSR1 it returns early with `stopped` True and a mid-epoch checkpoint written."""
        records = []
        last = self.cfg.SOLVER.MAX_EPOCH if stop_after_epoch is None else min(stop_after_epoch, self.cfg.SOLVER.MAX_EPOCH)
        with self._stop_on_signals():
            while self.epoch < last:
                record = self.train_epoch()
                if self.stopped:
                    break
                self.epoch += 1
                self.iteration = 0
                self.totals = _new_totals()
                record["epoch"] = self.epoch
                if self._due(self.cfg.TRAIN.EVAL_PERIOD):
                    record.update(self.validate())
                if self._due(self.cfg.TRAIN.CHECKPOINT_PERIOD):
                    record["checkpoint"] = self.save_checkpoint()
                self._log_epoch(record)
                records.append(record)
        self.scalars.close()
        return records

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGTERM / SIGUSR1 only set a flag; the loop acts on it between optimizer steps, on every rank."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._request_stop) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = signal.Signals(signum).name

    def _due(self, period: int) -> bool:
        return self.epoch == self.cfg.SOLVER.MAX_EPOCH or (period > 0 and self.epoch % period == 0)

    def _epoch_batches(self):
        """This epoch's batch iterator, started at `self.iteration` (past the batches a resumed run trained on)."""
        if isinstance(self.train_loader, VideoLoader):
            self.train_loader.set_epoch(self.epoch, start_batch=self.iteration)
            batches = iter(self.train_loader)
        else:  # any other loader: draw the batches already trained on and drop them
            _set_epoch(self.train_loader, self.epoch)
            batches = iter(self.train_loader)
            for _ in range(self.iteration):
                next(batches)
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        return batches

    def train_epoch(self) -> dict:
        cfg, totals = self.cfg, self.totals
        self.forward.train()
        iterations = self.steps_per_epoch * self.accum
        batches = self._epoch_batches()
        bar = progress(iterations, f"epoch {self.epoch + 1}/{cfg.SOLVER.MAX_EPOCH}", self.env.is_main,
                       period=cfg.LOG_PERIOD, initial=self.iteration)
        window = []
        start = time.perf_counter() - totals["time_s"]
        fetched = time.perf_counter()
        for it, batch in enumerate(batches, start=self.iteration):
            if it == iterations:  # the tail that does not fill an accumulation window is dropped
                break
            totals["data_time_s"] += time.perf_counter() - fetched
            window_end = (it + 1) % self.accum == 0
            loss = self._forward_backward(batch, window_end)
            if loss is None:
                totals["nonfinite_steps"] += 1
            else:
                totals["loss_sum"], totals["loss_count"] = totals["loss_sum"] + loss, totals["loss_count"] + 1
                window.append(loss)
            totals["clips"] += batch["video"].shape[0] * self.env.world_size
            self.iteration = it + 1
            totals["time_s"] = time.perf_counter() - start
            bar.set_postfix_str(f"loss {totals['loss_sum'] / max(totals['loss_count'], 1):.4g}, "
                                f"lr {self.schedule.lr:.2g}", refresh=False)
            bar.update()
            if window_end:
                applied = self._optimizer_step()
                self.history.append(sum(window) / len(window) if window and applied else float("nan"))
                window = []
                self._log_step()
                if self._stop_agreed or self._checkpoint_due:
                    self._save_mid_epoch()
                    if self._stop_agreed:
                        break
            fetched = time.perf_counter()
        bar.close()
        elapsed = totals["time_s"]
        mean_loss = du.all_reduce_mean(
            torch.tensor(totals["loss_sum"] / max(totals["loss_count"], 1), device=self.device)).item()
        return {"train_loss": mean_loss, "lr": self.schedule.lr, "step": self.step, "time_s": round(elapsed, 2),
                "clips_per_s": round(totals["clips"] / max(elapsed, 1e-9), 2),
                "data_time_s": round(totals["data_time_s"], 2), "failed_videos": len(self.train_loader.failures.failed) if hasattr(self.train_loader, "failures") else 0,
                "nonfinite_steps": totals["nonfinite_steps"], "nonfinite_grad_steps": totals["nonfinite_grad_steps"]}

    def _log_step(self) -> None:
        if self.step % max(self.cfg.LOG_PERIOD, 1):
            return
        loss, lr = self.history[-1], self.schedule.lr
        self.scalars.add("train/loss", loss, self.step)
        self.scalars.add("train/lr", lr, self.step)
        elapsed = max(self.totals["time_s"], 1e-9)
        self.steps_jsonl.write({"epoch": self.epoch + 1, "iteration": self.iteration, "step": self.step,
                                "loss": loss, "lr": lr, "clips_per_s": round(self.totals["clips"] / elapsed, 2),
                                "data_time_s": round(self.totals["data_time_s"], 2)})

    def _save_mid_epoch(self) -> None:
        path = self.save_checkpoint()
        if self._stop_agreed:
            self.stopped = True
            cause = self.stop_signal or "another rank's stop signal"
            self.logger.info(f"stopping on {cause} after step {self.step} (epoch {self.epoch + 1}, iteration "
                             f"{self.iteration}): wrote {path}; the same command resumes from it "
                             f"(exit code {STOPPED_EXIT_CODE})")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _forward_backward(self, batch: dict, window_end: bool) -> float | None:
        """Loss of one batch, backpropagated (scaled by 1/accum); None when it was non-finite on any rank.

        Until the last batch of an accumulation window, DDP's no_sync covers forward and backward (DDP decides
        in forward whether backward all-reduces), so a window costs one all-reduce. A non-finite loss on any
        rank marks the whole window skipped on every rank: its gradients, partly unsynchronised, are dropped.
        """
        video = batch["video"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        target = label
        if self.mixup is not None:
            video, target = self.mixup(video, label)
        sync = window_end or not self.env.distributed
        with contextlib.nullcontext() if sync else self.forward.no_sync():
            with self._autocast(), attention_in_fp32(self.cfg.TRAIN.ATTENTION_FP32):
                outputs = self.forward(video)
                loss = sum(classification_loss(o, target, self.cfg.MIXUP.LABEL_SMOOTH_VALUE) for o in outputs)
            finite = bool(torch.isfinite(loss))
            # one collective: the loss summed over ranks, how many ranks saw a non-finite loss, how many got a
            # stop signal, and whether rank 0's clock says a time-based checkpoint is due
            stats = torch.cat([
                (loss.detach().float() if finite else torch.zeros((), device=self.device)).reshape(1),
                torch.tensor([0.0 if finite else 1.0, 1.0 if self.stop_signal else 0.0,
                              1.0 if self._time_for_checkpoint() else 0.0], device=self.device)])
            du.all_reduce_sum(stats)
            self._stop_agreed, self._checkpoint_due = bool(stats[2] > 0), bool(stats[3] > 0)
            if stats[1] > 0:
                self._window_skipped = True
                self._skip_nonfinite_loss(batch)
                return None
            self.nonfinite_in_a_row = 0
            self.scaler.scale(loss / self.accum).backward()
        return stats[0].item() / self.env.world_size

    def _time_for_checkpoint(self) -> bool:
        minutes = self.cfg.TRAIN.CHECKPOINT_MINUTES
        return self.env.is_main and minutes > 0 and time.monotonic() - self._last_save >= 60.0 * minutes

    def _skip_nonfinite_loss(self, batch: dict) -> None:
        self.nonfinite_in_a_row += 1
        paths = [p for rank_paths in du.gather_objects(batch_paths(self.train_loader, batch)) for p in rank_paths]
        self.logger.warning(f"non-finite loss at epoch {self.epoch + 1}, step {self.step} ({self.nonfinite_in_a_row} "
                            f"in a row); step skipped. Batch videos: {', '.join(paths)}")
        if self.nonfinite_in_a_row >= self.cfg.TRAIN.MAX_NONFINITE_STEPS:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row (TRAIN.MAX_NONFINITE_STEPS="
                f"{self.cfg.TRAIN.MAX_NONFINITE_STEPS}); stopping. Last batch's videos: {', '.join(paths)}. "
                f"Check these files, lower SOLVER.BASE_LR, or train with TRAIN.MIXED_PRECISION bf16/none.")

    def _skip_nonfinite_gradients(self) -> None:
        self.nonfinite_in_a_row += 1
        self.totals["nonfinite_grad_steps"] += 1
        message = (f"non-finite gradients at epoch {self.epoch + 1}, step {self.step} although the loss was finite "
                   f"({self.nonfinite_in_a_row} in a row); step skipped. The arithmetic overflowed, not the videos")
        self.logger.warning(message)
        if self.nonfinite_in_a_row >= self.cfg.TRAIN.MAX_NONFINITE_STEPS:
            raise NonFiniteLossError(
                f"{message}; {self.nonfinite_in_a_row} skipped steps in a row (TRAIN.MAX_NONFINITE_STEPS="
                f"{self.cfg.TRAIN.MAX_NONFINITE_STEPS}), stopping. Lower SOLVER.BASE_LR, keep SOLVER.CLIP_GRAD_L2NORM "
                f"on, or train with TRAIN.MIXED_PRECISION none (or TRAIN.ATTENTION_FP32 True).")

    def _optimizer_step(self) -> bool:
        """Check, clip and apply the window's gradients, then advance the schedule; False when skipped.

        Non-finite gradients are looked for after unscaling and before clipping; every rank takes the same
        branch. Under fp16 they are GradScaler's business (it skips the step and lowers the scale)."""
        applied = not self._window_skipped
        self._window_skipped = False
        if applied:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            finite = du.all_true(bool(torch.isfinite(norm)), self.device)
            if finite and self.cfg.SOLVER.CLIP_GRAD_L2NORM > 0:
                torch.nn.utils.clip_grads_with_norm_(params, self.cfg.SOLVER.CLIP_GRAD_L2NORM, norm)
            if finite or self.scaler.is_enabled():
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self._skip_nonfinite_gradients()
            applied = finite
            if applied and self.ema is not None:
                self.ema.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.step += 1
        return applied

    @torch.no_grad()
    def validate(self) -> dict:
        """Single-view top-1/top-5 on the val split (noisy but fast; the multi-view test is the number to report).

        Under DDP the sampler pads the split to a multiple of the world size; results are kept per dataset
        index, so each video counts once."""
        if self.val_loader is None:
            self.val_loader = self.build_loader(self.cfg, "val", rank=self.env.rank, world_size=self.env.world_size,
                                                seed=self.cfg.RNG_SEED, local_world_size=self.env.processes_per_node)
        out = {}
        models = {"val": self.model} | ({"val_ema": self.ema.module} if self.ema is not None else {})
        for prefix, model in models.items():
            was_training = model.training
            model.eval()
            hits: dict[int, tuple[bool, bool]] = {}  # dataset index -> (top-1 hit, top-5 hit)
            bar = progress(len(self.val_loader), prefix, self.env.is_main, period=self.cfg.LOG_PERIOD)
            for batch in self.val_loader:
                with self._autocast():
                    logits = model(batch["video"].to(self.device)).float()
                label = batch["label"].to(self.device)
                topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
                top1, top5 = (topk[:, 0] == label).tolist(), (topk == label[:, None]).any(1).tolist()
                for index, h1, h5 in zip(batch["index"].tolist(), top1, top5):
                    hits.setdefault(index, (h1, h5))
                bar.update()
            bar.close()
            model.train(was_training)
            merged: dict[int, tuple[bool, bool]] = {}
            for rank_hits in du.gather_objects(hits):
                for index, h in rank_hits.items():
                    merged.setdefault(index, h)
            n = max(len(merged), 1)
            out[f"{prefix}_top1"] = round(100.0 * sum(h[0] for h in merged.values()) / n, 3)
            out[f"{prefix}_top5"] = round(100.0 * sum(h[1] for h in merged.values()) / n, 3)
            out["val_videos"] = len(merged)
        return out

    # -- state -------------------------------------------------------------------------------

    def save_checkpoint(self) -> str:
        """Write the checkpoint of where the run is (after `epoch` epochs and `iteration` batches of the next)
        atomically (rank 0); returns its path. Weights with NaN/inf are refused (NonFiniteWeightsError)."""
        model_state = self.model.state_dict()
        bad = nonfinite_tensors(model_state)
        if bad:  # every rank holds the same weights, so every rank raises here
            raise NonFiniteWeightsError(
                f"{len(bad)} of {len(model_state)} weight tensors hold NaN/inf (first: {bad[0]}) at epoch "
                f"{self.epoch}, step {self.step}; no checkpoint written, so a resume starts from the last good one "
                f"({latest_checkpoint(self.output_dir) or 'none yet'})")
        rng = du.gather_objects(rng_state())
        path = checkpoint_path(self.output_dir, self.epoch, self.iteration)
        if self.env.is_main:
            state = {
                "model_state": model_state,
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                # the sampler position: batches of epoch `epoch` + 1 done (the order is a function of
                # RNG_SEED, the epoch and the world size, so this and the RNG states pin the rest of the epoch)
                "iteration": self.iteration,
                "per_process_batch": self.per_process_batch,
                "epoch_totals": dict(self.totals),
                "nonfinite_in_a_row": self.nonfinite_in_a_row,
                "rng": rng,
                "cfg": self.cfg.dump(),
                "model_name": self.cfg.MODEL.MODEL_NAME,
            }
            if self.ema is not None:
                state["ema_state"] = self.ema.module.state_dict()
            save_checkpoint(state, path)
            self._prune_checkpoints(keep=path)
        self._last_save = time.monotonic()
        du.barrier()
        return path

    def _prune_checkpoints(self, keep: str) -> None:
        """TRAIN.CHECKPOINT_KEEP N > 0 keeps the newest N; 0 keeps every epoch checkpoint and the newest two
        mid-epoch ones (they are resume points, and the one before is the fallback should the newest be bad)."""
        n = self.cfg.TRAIN.CHECKPOINT_KEEP
        found = list_checkpoints(self.output_dir)
        if n > 0:
            old = found[:-n]
        else:
            old = [p for p in found[:-2] if _is_mid_epoch(p)]
        for path in old:
            if path != keep:
                os.remove(path)

    def _log_epoch(self, record: dict) -> None:
        self.jsonl.write(record)
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.scalars.add(f"epoch/{key}", value, self.epoch)
        shown = ", ".join(f"{k} {fmt_value(v)}" for k, v in record.items() if k not in ("checkpoint", "epoch"))
        self.logger.info(f"epoch {self.epoch}/{self.cfg.SOLVER.MAX_EPOCH}: {shown}")
