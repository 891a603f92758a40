"""The training loop: one config in, checkpoints, logs and a trained model out.

One process or many (DDP under torchrun / srun); AdamW or SGD with a per-step warmup + cosine
schedule; mixed precision (bf16, or fp16 with loss scaling) with attention optionally kept in fp32;
gradient accumulation and clipping; label smoothing / mixup targets; an EMA of the weights;
single-view validation every TRAIN.EVAL_PERIOD epochs; atomic checkpoints holding everything needed
for an exact resume (model, optimizer, schedule, scaler, EMA, epoch, step, every rank's RNG states).
A non-finite loss skips its step on every rank; TRAIN.MAX_NONFINITE_STEPS in a row stop the run.
"""

import contextlib
import copy
import os
import random
import re
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vidformer.engine import distributed as du
from vidformer.engine.build import build_model
from vidformer.engine.optim import WarmupCosine, build_optimizer, scaled_lrs
from vidformer.engine.runlog import JsonLines, Scalars, progress, setup_logging
from vidformer.errors import UsageError
from vidformer.layers import attention_in_fp32

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_epoch_(\d+)\.pyth$")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """TRAIN.MAX_NONFINITE_STEPS consecutive non-finite losses (the message names the videos)."""


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


def checkpoint_path(output_dir: str, epoch: int) -> str:
    return os.path.join(output_dir, CHECKPOINT_DIR, f"checkpoint_epoch_{epoch:05d}.pyth")


def latest_checkpoint(output_dir: str) -> str | None:
    """The checkpoint of the highest epoch in OUTPUT_DIR/checkpoints, or None."""
    folder = os.path.join(output_dir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return None
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := _CHECKPOINT_NAME.match(name))]
    return os.path.join(folder, max(found)[1]) if found else None


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
        if build_loader is None:
            from vidformer.data import build_loader
        self.build_loader = build_loader
        if cfg.DETERMINISTIC:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(cfg.RNG_SEED + self.env.rank)

        self.model = (model if model is not None else build_model(cfg)).to(self.device)
        resume_from = self._resume_path(resume)
        if cfg.TRAIN.CHECKPOINT_FILE_PATH and resume_from is None:
            if cfg.TRAIN.CHECKPOINT_EPOCH_RESET:
                self._load_initial_weights(cfg.TRAIN.CHECKPOINT_FILE_PATH)
            else:  # PySlowFast's meaning: carry on that run's epoch, optimizer and schedule
                resume_from = cfg.TRAIN.CHECKPOINT_FILE_PATH
        if self.env.distributed and cfg.BN.SYNC and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)

        self.train_loader = self.build_loader(cfg, "train", rank=self.env.rank, world_size=self.env.world_size,
                                              seed=cfg.RNG_SEED)
        self.val_loader = None
        self.accum = cfg.TRAIN.GRAD_ACCUM_STEPS
        self.steps_per_epoch = len(self.train_loader) // self.accum
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"the training split gives {len(self.train_loader)} batches per process, fewer than "
                f"TRAIN.GRAD_ACCUM_STEPS={self.accum}; lower TRAIN.BATCH_SIZE or TRAIN.GRAD_ACCUM_STEPS")
        per_process = cfg.TRAIN.BATCH_SIZE // self.env.world_size
        self.global_clips = per_process * self.env.world_size * cfg.AUG.NUM_SAMPLE * self.accum
        base_lr, start_lr, end_lr = scaled_lrs(cfg, self.global_clips)
        self.optimizer = build_optimizer(self.model, cfg, base_lr)
        self.schedule = WarmupCosine(
            self.optimizer, base_lr=base_lr, start_lr=start_lr, end_lr=end_lr,
            warmup_steps=round(cfg.SOLVER.WARMUP_EPOCHS * self.steps_per_epoch),
            total_steps=cfg.SOLVER.MAX_EPOCH * self.steps_per_epoch)
        self.amp_dtype = _AMP_DTYPES.get(cfg.TRAIN.MIXED_PRECISION)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.TRAIN.MIXED_PRECISION == "fp16")
        self.mixup = self._build_mixup()

        self.forward = _Exits(self.model)
        if self.env.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=device_ids)
        # after DDP's constructor broadcast rank 0's weights, so every rank's EMA starts equal
        self.ema = ModelEma(self.model, cfg.TRAIN.EMA_DECAY) if cfg.TRAIN.EMA_DECAY > 0 else None

        self.epoch = 0
        self.step = 0
        self.history: list[float] = []  # mean loss over ranks of every optimizer step
        self.nonfinite_in_a_row = 0
        if resume_from is not None:
            self._resume(resume_from)
        if self.env.is_main:
            os.makedirs(os.path.join(self.output_dir, CHECKPOINT_DIR), exist_ok=True)
            with open(os.path.join(self.output_dir, CHECKPOINT_DIR, "config.yaml"), "w") as f:
                f.write(cfg.dump())
        self.jsonl = JsonLines(os.path.join(self.output_dir, "log.jsonl") if self.env.is_main else None)
        self.scalars = Scalars(os.path.join(self.output_dir, "tensorboard") if self.env.is_main else None)
        self.logger.info(
            f"{cfg.MODEL.MODEL_NAME}: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M params, "
            f"{self.env.world_size} process(es) on {self.device.type}, {self.global_clips} clips per optimizer "
            f"step, lr {base_lr:.3g}, {self.steps_per_epoch} steps/epoch, epochs {self.epoch}->{cfg.SOLVER.MAX_EPOCH}")

    # -- set-up helpers ----------------------------------------------------------------------

    def _resume_path(self, resume: bool | str | None) -> str | None:
        if isinstance(resume, str):
            if not os.path.isfile(resume):
                raise UsageError(f"--resume checkpoint '{resume}' does not exist")
            return resume
        if resume is False or (resume is None and not self.cfg.TRAIN.AUTO_RESUME):
            return None
        return latest_checkpoint(self.output_dir)

    def _load_initial_weights(self, path: str) -> None:
        from vidformer.checkpoint import load_pretrained

        report = load_pretrained(self.model, path, inflate=self.cfg.TRAIN.CHECKPOINT_INFLATE, strict=False)
        self.logger.info(f"initial weights from {path}\n{report}")

    def _build_mixup(self):
        if not self.cfg.MIXUP.ENABLE:
            return None
        from vidformer.data.mixup import build_mixup

        return build_mixup(self.cfg, self.cfg.MODEL.NUM_CLASSES)

    def _resume(self, path: str) -> None:
        from vidformer.checkpoint import load_checkpoint_file

        ckpt = load_checkpoint_file(path)
        missing = [k for k in ("model_state", "optimizer_state", "scheduler", "scaler", "epoch", "step", "rng")
                   if k not in ckpt]
        if missing:
            raise UsageError(f"'{path}' is not a vidformer training checkpoint (no {', '.join(missing)}), so its run "
                             f"cannot be continued; to start from its weights set TRAIN.CHECKPOINT_EPOCH_RESET True")
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema_state" in ckpt:
            self.ema.module.load_state_dict(ckpt["ema_state"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        rng = ckpt["rng"]
        if len(rng) == self.env.world_size:
            set_rng_state(rng[self.env.rank])
        else:
            self.logger.warning(f"{path} was written by {len(rng)} process(es), this run has "
                                f"{self.env.world_size}: random streams restart from RNG_SEED (resume is not exact)")
        self.logger.info(f"resumed from {path} (epoch {self.epoch}, step {self.step})")

    # -- the loop ----------------------------------------------------------------------------

    def fit(self, *, stop_after_epoch: int | None = None) -> list[dict]:
        """Train to SOLVER.MAX_EPOCH (or stop after `stop_after_epoch`); returns this run's epoch records."""
        records = []
        last = self.cfg.SOLVER.MAX_EPOCH if stop_after_epoch is None else min(stop_after_epoch, self.cfg.SOLVER.MAX_EPOCH)
        while self.epoch < last:
            record = self.train_epoch()
            self.epoch += 1
            record["epoch"] = self.epoch
            if self._due(self.cfg.TRAIN.EVAL_PERIOD):
                record.update(self.validate())
            if self._due(self.cfg.TRAIN.CHECKPOINT_PERIOD):
                record["checkpoint"] = self.save_checkpoint()
            self._log_epoch(record)
            records.append(record)
        self.scalars.close()
        return records

    def _due(self, period: int) -> bool:
        return self.epoch == self.cfg.SOLVER.MAX_EPOCH or (period > 0 and self.epoch % period == 0)

    def train_epoch(self) -> dict:
        cfg = self.cfg
        self.forward.train()
        _set_epoch(self.train_loader, self.epoch)
        iterations = self.steps_per_epoch * self.accum
        bar = progress(iterations, f"epoch {self.epoch + 1}/{cfg.SOLVER.MAX_EPOCH}", self.env.is_main)
        loss_sum, loss_count, nonfinite, window = 0.0, 0, 0, []
        clips, data_time, start = 0, 0.0, time.perf_counter()
        fetched = time.perf_counter()
        for it, batch in enumerate(self.train_loader):
            if it == iterations:  # the tail that does not fill an accumulation window is dropped
                break
            data_time += time.perf_counter() - fetched
            window_end = (it + 1) % self.accum == 0
            loss = self._forward_backward(batch, window_end)
            if loss is None:
                nonfinite += 1
            else:
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                window.append(loss)
            clips += batch["video"].shape[0] * self.env.world_size
            if window_end:
                self._optimizer_step()
                self.history.append(sum(window) / len(window) if window else float("nan"))
                window = []
                if self.step % max(cfg.LOG_PERIOD, 1) == 0:
                    self.scalars.add("train/loss", self.history[-1], self.step)
                    self.scalars.add("train/lr", self.schedule.lr, self.step)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum / max(loss_count, 1):.4f}", lr=f"{self.schedule.lr:.3g}",
                            clips_s=f"{clips / elapsed:.1f}", data_s=f"{data_time / (it + 1):.3f}", refresh=False)
            bar.update()
            fetched = time.perf_counter()
        bar.close()
        elapsed = time.perf_counter() - start
        mean_loss = du.all_reduce_mean(torch.tensor(loss_sum / max(loss_count, 1), device=self.device)).item()
        return {"train_loss": mean_loss, "lr": self.schedule.lr, "step": self.step, "time_s": round(elapsed, 2),
                "clips_per_s": round(clips / elapsed, 2), "data_time_s": round(data_time, 2),
                "failed_videos": len(self.train_loader.failures.failed) if hasattr(self.train_loader, "failures") else 0,
                "nonfinite_steps": nonfinite}

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _forward_backward(self, batch: dict, window_end: bool) -> float | None:
        """Loss of one batch, backpropagated (scaled by 1/accum); None when it was non-finite on any rank."""
        video = batch["video"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        target = label
        if self.mixup is not None:
            video, target = self.mixup(video, label)
        with self._autocast(), attention_in_fp32(self.cfg.TRAIN.ATTENTION_FP32):
            outputs = self.forward(video)
            loss = sum(classification_loss(o, target, self.cfg.MIXUP.LABEL_SMOOTH_VALUE) for o in outputs)
        finite = bool(torch.isfinite(loss))
        # one collective: the loss summed over ranks and how many ranks saw a non-finite loss
        stats = torch.stack([loss.detach().float() if finite else loss.new_zeros((), dtype=torch.float32),
                             torch.tensor(0.0 if finite else 1.0, device=self.device)])
        if self.env.distributed:
            torch.distributed.all_reduce(stats)
        if stats[1] > 0:
            self._skip_nonfinite(batch)
            return None
        self.nonfinite_in_a_row = 0
        sync = window_end or not self.env.distributed
        with contextlib.nullcontext() if sync else self.forward.no_sync():
            self.scaler.scale(loss / self.accum).backward()
        return stats[0].item() / self.env.world_size

    def _skip_nonfinite(self, batch: dict) -> None:
        self.nonfinite_in_a_row += 1
        paths = [p for rank_paths in du.gather_objects(batch_paths(self.train_loader, batch)) for p in rank_paths]
        message = (f"non-finite loss at epoch {self.epoch + 1}, step {self.step} ({self.nonfinite_in_a_row} in a row); "
                   f"step skipped. Batch videos: {', '.join(paths)}")
        self.logger.warning(message)
        if self.nonfinite_in_a_row >= self.cfg.TRAIN.MAX_NONFINITE_STEPS:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row (TRAIN.MAX_NONFINITE_STEPS="
                f"{self.cfg.TRAIN.MAX_NONFINITE_STEPS}); stopping. Last batch's videos: {', '.join(paths)}. "
                f"Check these files, lower SOLVER.BASE_LR, or train with TRAIN.MIXED_PRECISION bf16/none.")

    def _optimizer_step(self) -> None:
        """Clip, step and advance the schedule; a window whose every batch was skipped has no gradients."""
        has_grads = any(p.grad is not None for p in self.model.parameters())
        if has_grads:
            if self.cfg.SOLVER.CLIP_GRAD_L2NORM > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.SOLVER.CLIP_GRAD_L2NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
        self.schedule.step()
        self.step += 1

    @torch.no_grad()
    def validate(self) -> dict:
        """Single-view top-1/top-5 on the val split (noisy but fast; the multi-view test is the number to report)."""
        if self.val_loader is None:
            self.val_loader = self.build_loader(self.cfg, "val", rank=self.env.rank, world_size=self.env.world_size,
                                                seed=self.cfg.RNG_SEED)
        out = {}
        models = {"val": self.model} | ({"val_ema": self.ema.module} if self.ema is not None else {})
        for prefix, model in models.items():
            was_training = model.training
            model.eval()
            counts = torch.zeros(3, device=self.device)  # top-1 hits, top-5 hits, clips
            for batch in self.val_loader:
                with self._autocast():
                    logits = model(batch["video"].to(self.device)).float()
                label = batch["label"].to(self.device)
                k = min(5, logits.shape[1])
                topk = logits.topk(k, dim=1).indices
                counts += torch.stack([(topk[:, 0] == label).sum(), (topk == label[:, None]).any(1).sum(),
                                       torch.tensor(label.numel(), device=self.device)]).float()
            model.train(was_training)
            if self.env.distributed:
                torch.distributed.all_reduce(counts)
            out[f"{prefix}_top1"] = round(100.0 * counts[0].item() / max(counts[2].item(), 1), 3)
            out[f"{prefix}_top5"] = round(100.0 * counts[1].item() / max(counts[2].item(), 1), 3)
        return out

    # -- state -------------------------------------------------------------------------------

    def save_checkpoint(self) -> str:
        """Write OUTPUT_DIR/checkpoints/checkpoint_epoch_NNNNN.pyth atomically (rank 0); returns its path."""
        from vidformer.checkpoint import save_checkpoint

        rng = du.gather_objects(rng_state())
        path = checkpoint_path(self.output_dir, self.epoch)
        if self.env.is_main:
            state = {
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "rng": rng,
                "cfg": self.cfg.dump(),
                "model_name": self.cfg.MODEL.MODEL_NAME,
            }
            if self.ema is not None:
                state["ema_state"] = self.ema.module.state_dict()
            save_checkpoint(state, path)
        du.barrier()
        return path

    def _log_epoch(self, record: dict) -> None:
        self.jsonl.write(record)
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.scalars.add(f"epoch/{key}", value, self.epoch)
        shown = ", ".join(f"{k} {v}" for k, v in record.items() if k != "checkpoint")
        self.logger.info(f"epoch {self.epoch}/{self.cfg.SOLVER.MAX_EPOCH}: {shown}")
