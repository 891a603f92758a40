"""What a cluster does to a training run: stop signals mid-epoch and an exact resume, corrupt newest
checkpoints, non-finite gradients, Slurm without scontrol or srun, batch size per node, accumulation
with one all-reduce per step (two gloo processes), EMA at resume, file modes, progress and log files."""

import logging
import math
import os
import re
import signal
import stat

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from tests.test_trainer import CLASSES, FRAMES, SIZE, _free_port, tiny_cfg, toy_loader, weights
from tests.toy import ToyVideo
from vidformer.checkpoint import save_checkpoint
from vidformer.config import get_cfg
from vidformer.data import build_loader, make_synthetic_dataset
from vidformer.data.loader import per_process_batch
from vidformer.engine import distributed as du
from vidformer.engine import runlog
from vidformer.engine import trainer as trainer_module
from vidformer.engine.runlog import LineProgress, progress, read_json_lines
from vidformer.engine.trainer import (NonFiniteWeightsError, Trainer, checkpoint_path, latest_checkpoint,
                                      list_checkpoints)
from vidformer.errors import ConfigError, UsageError
from vidformer.models.uniformer import CBlock, Kernels


@pytest.fixture
def logs(caplog, monkeypatch):
    """The vidformer logger's records, seen by caplog (every Trainer sets its logger up not to propagate)."""
    def setup_logging(*args):
        logger = runlog.setup_logging(*args)
        logger.propagate = True
        return logger

    monkeypatch.setattr(trainer_module, "setup_logging", setup_logging)
    logging.getLogger("vidformer").propagate = True
    caplog.set_level(logging.INFO, logger="vidformer")
    yield caplog
    logging.getLogger("vidformer").propagate = False


def _signal_at_training_forward(model: nn.Module, call: int, sig=signal.SIGTERM) -> None:
    """Send `sig` to this process during the `call`-th training forward pass (what a preemption does)."""
    seen = {"n": 0}

    def hook(module, args):
        if module.training:
            seen["n"] += 1
            if seen["n"] == call:
                os.kill(os.getpid(), sig)

    model.register_forward_pre_hook(hook)


# mixup draws random numbers every batch, so the resume must restore every RNG where it was
_RESUME = ("SOLVER.MAX_EPOCH", "2", "TRAIN.EMA_DECAY", "0.5", "MIXUP.ENABLE", "True", "TRAIN.EVAL_PERIOD", "2")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_stop_signal_mid_epoch_checkpoints_and_the_resume_is_bitwise_exact(tmp_path, logs, sig):
    full = Trainer(tiny_cfg(tmp_path / "full", *_RESUME), build_loader=toy_loader)
    full.fit()
    cfg = tiny_cfg(tmp_path / "cut", *_RESUME)
    cut = Trainer(cfg, build_loader=toy_loader)
    _signal_at_training_forward(cut.model, call=6, sig=sig)  # epoch 2, its second batch
    records = cut.fit()
    assert cut.stopped and cut.stop_signal == sig.name and [r["epoch"] for r in records] == [1]
    assert latest_checkpoint(str(tmp_path / "cut")) == checkpoint_path(str(tmp_path / "cut"), 1, 2)
    assert f"stopping on {sig.name} after step 6" in logs.text
    torch.manual_seed(1234)  # a new process would start from other random streams
    resumed = Trainer(cfg, build_loader=toy_loader)
    assert (resumed.epoch, resumed.iteration, resumed.step) == (1, 2, 6)
    resumed.fit()
    for name, a, b in (("model", full.model, resumed.model), ("ema", full.ema.module, resumed.ema.module)):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), (name, key)
    epochs = read_json_lines(str(tmp_path / "cut" / "log.jsonl"))
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[1]["train_loss"] == pytest.approx(read_json_lines(str(tmp_path / "full" / "log.jsonl"))[1]["train_loss"])
    steps = [r["step"] for r in read_json_lines(str(tmp_path / "cut" / "log_steps.jsonl"))]
    assert steps == list(range(1, 9))


def test_video_loader_starts_a_resumed_epoch_part_way_with_the_same_clips(tmp_path):
    root = make_synthetic_dataset(str(tmp_path), train_per_class=2, val_per_class=1, num_frames=8, size=32)
    cfg = get_cfg(overrides=["DATA.PATH_TO_DATA_DIR", root, "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "1",
                             "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "32",
                             "TRAIN.BATCH_SIZE", "2", "DATA_LOADER.NUM_WORKERS", "0"])
    loader = build_loader(cfg, "train")
    loader.set_epoch(3)
    whole = list(loader)
    loader.set_epoch(3, start_batch=2)
    rest = list(loader)
    assert len(whole) == 4 and len(rest) == 2
    for a, b in zip(whole[2:], rest):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["video"], b["video"])
    assert len(list(loader)) == 4  # only the resumed epoch is shortened


def test_time_based_checkpoints_and_keep_last_n(tmp_path):
    # CHECKPOINT_MINUTES this small is due at every step; KEEP 2 leaves the newest two
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1", "TRAIN.CHECKPOINT_MINUTES", "1e-9", "TRAIN.CHECKPOINT_KEEP", "2")
    Trainer(cfg, build_loader=toy_loader).fit()
    names = [os.path.basename(p) for p in list_checkpoints(str(tmp_path))]
    assert names == ["checkpoint_epoch_00000_iter_000004.pyth", "checkpoint_epoch_00001.pyth"]


def test_auto_resume_skips_truncated_and_empty_newest_checkpoints(tmp_path, logs):
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3")
    Trainer(cfg, build_loader=toy_loader).fit(stop_after_epoch=1)
    good = latest_checkpoint(str(tmp_path))
    data = open(good, "rb").read()
    with open(checkpoint_path(str(tmp_path), 2), "wb") as f:
        f.write(data[: len(data) // 2])
    open(checkpoint_path(str(tmp_path), 3), "wb").close()
    resumed = Trainer(cfg, build_loader=toy_loader)
    assert (resumed.epoch, resumed.step) == (1, 4)
    assert re.search(r"skips .*checkpoint_epoch_00003\.pyth: .*empty \(0 bytes\)", logs.text)
    assert re.search(r"skips .*checkpoint_epoch_00002\.pyth: .*truncated", logs.text)
    assert f"resumed from {good}" in logs.text


class _InfGradient(torch.autograd.Function):
    """Identity forward; backward returns inf: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


class _InfGradientAt(ToyVideo):
    """A toy model whose `at`-th training forward pass backpropagates inf into every weight below the head."""

    def __init__(self, at: int):
        super().__init__(num_classes=CLASSES, num_frames=FRAMES, img_size=SIZE)
        self.at, self.calls = at, 0

    def forward_features(self, x):
        feats = super().forward_features(x)
        self.calls += self.training
        return _InfGradient.apply(feats) if self.training and self.calls == self.at else feats


def test_nonfinite_gradients_skip_the_step_and_name_it(tmp_path, logs):
    torch.manual_seed(0)
    trainer = Trainer(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1", "TRAIN.MIXED_PRECISION", "bf16"),
                      model=_InfGradientAt(2), build_loader=toy_loader)
    record = trainer.fit()[0]
    assert record["nonfinite_grad_steps"] == 1 and record["nonfinite_steps"] == 0
    assert [math.isnan(v) for v in trainer.history] == [False, True, False, False]
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert "non-finite gradients at epoch 1, step 1 although the loss was finite" in logs.text
    assert "Batch videos" not in logs.text


def test_a_checkpoint_of_nonfinite_weights_is_never_written(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"), build_loader=toy_loader)
    with torch.no_grad():
        trainer.model.head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="1 of .* weight tensors hold NaN/inf .*head.weight"):
        trainer.save_checkpoint()
    assert list_checkpoints(str(tmp_path)) == []


# ---------------------------------------------------------------------------------------------
# Slurm


def test_slurm_rendezvous_uses_the_job_scripts_address_and_needs_no_scontrol(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol anywhere
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-09,12],cpu1"}
    given = dict(job, MASTER_ADDR="10.0.0.5", MASTER_PORT="29500")
    du.slurm_rendezvous(given)
    assert (given["MASTER_ADDR"], given["MASTER_PORT"]) == ("10.0.0.5", "29500")
    derived = dict(job)
    du.slurm_rendezvous(derived)
    assert (derived["MASTER_ADDR"], derived["MASTER_PORT"]) == ("gpu07", str(12000 + 4242))
    with pytest.raises(UsageError, match="SLURM_JOB_NODELIST.*export MASTER_ADDR"):
        du.slurm_rendezvous({"SLURM_JOB_ID": "1"})
    # where scontrol exists it has the last word (it knows every host-list form)
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\necho node-a\necho node-b\n")
    scontrol.chmod(0o755)
    via_scontrol = dict(job)
    du.slurm_rendezvous(via_scontrol)
    assert via_scontrol["MASTER_ADDR"] == "node-a"


def test_several_slurm_tasks_without_srun_is_an_immediate_error():
    batch_script = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    with pytest.raises(UsageError, match=r"SLURM_NTASKS=2 .*not started by srun.*srun vidformer train"):
        du.detect_env(batch_script)
    with pytest.raises(UsageError, match="srun"):
        du.detect_env(dict(batch_script, SLURM_STEP_ID="4294967294"))  # the batch step's id
    assert du.detect_env(dict(batch_script, SLURM_NTASKS="1")) == du.DistEnv()
    srun_task = dict(batch_script, SLURM_STEP_ID="0", SLURM_PROCID="1", SLURM_STEP_NUM_TASKS="2")
    assert du.detect_env(srun_task) == du.DistEnv(1, 2, 0, "slurm")


def test_batch_size_is_per_node(tmp_path, logs):
    cfg = tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "8")
    assert per_process_batch(cfg, 4) == 2
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE 8 .*3 processes per node"):
        per_process_batch(cfg, 3)
    trainer = Trainer(tiny_cfg(tmp_path, "SOLVER.LR_SCALE_BY_BATCH", "True", "SOLVER.REFERENCE_BATCH", "8"),
                      build_loader=toy_loader)
    assert trainer.global_clips == 4 and trainer.base_lr == pytest.approx(0.005)
    assert "TRAIN.BATCH_SIZE 4 per node = 4 per process, global batch 4 clips" in logs.text


# ---------------------------------------------------------------------------------------------
# two processes, gloo: accumulation with one all-reduce per optimizer step


def _accumulation_worker(rank: int, world_size: int, port: int, out_dir: str):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = du.init_distributed(du.DistEnv(rank, world_size, rank, "torchrun", world_size))
    try:
        torch.manual_seed(0)
        cfg = tiny_cfg(out_dir, "SOLVER.OPTIMIZING_METHOD", "sgd", "TRAIN.GRAD_ACCUM_STEPS", "2", "SOLVER.MAX_EPOCH", "1")

        def loader(cfg, split, **kw):  # one NaN clip; an odd val split, which the sampler pads
            return toy_loader(cfg, split, nan_index=(5,), val_size=7, **kw)

        trainer = Trainer(cfg, model=ToyVideo(num_classes=CLASSES, num_frames=FRAMES, img_size=SIZE),
                          build_loader=loader, env=env)
        calls = []

        def counting_hook(state, bucket):
            calls.append(1)
            return allreduce_hook(state, bucket)

        trainer.forward.register_comm_hook(None, counting_hook)
        records = trainer.fit()
        torch.save({"all_reduces": len(calls), "steps": trainer.step, "records": records,
                    "per_process_batch": trainer.per_process_batch, "global_clips": trainer.global_clips,
                    "weights": trainer.model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        du.shutdown()


@pytest.mark.slow
def test_two_process_accumulation_all_reduces_once_per_step_and_ranks_agree(tmp_path):
    mp.spawn(_accumulation_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        # BATCH_SIZE 4 per node on one node of 2 processes: 2 per process, 2 x 2 x 2 accumulation = 8 per step
        assert (r["per_process_batch"], r["global_clips"], r["steps"]) == (2, 8, 2)
        # the toy model's gradients fit one DDP bucket: one all-reduce per step, none for the micro-batch
        # before it; a window whose last micro-batch is the NaN clip skips its backward (and its all-reduce)
        assert r["steps"] - 1 <= r["all_reduces"] <= r["steps"]
        assert sum(rec["nonfinite_steps"] for rec in r["records"]) == 1
        assert all(rec["val_videos"] == 7 for rec in r["records"])  # the padded duplicate counts once
    for key, value in ranks[0]["weights"].items():
        assert torch.isfinite(value).all() and torch.equal(value, ranks[1]["weights"][key]), key


# ---------------------------------------------------------------------------------------------
# resume of another run, EMA, files, logs


def test_resuming_another_model_or_optimizer_is_a_usage_error(tmp_path):
    Trainer(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"), build_loader=toy_loader).fit()
    with pytest.raises(UsageError, match=r"SOLVER.OPTIMIZING_METHOD 'adamw' there, 'sgd' here.*--no-resume.*OUTPUT_DIR"):
        Trainer(tiny_cfg(tmp_path, "SOLVER.OPTIMIZING_METHOD", "sgd"), build_loader=toy_loader)
    with pytest.raises(UsageError, match=r"MODEL.NUM_CLASSES 4 there, 3 here"):
        Trainer(tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "3"), build_loader=toy_loader)


def test_ema_starts_from_the_resumed_weights_when_the_checkpoint_has_none(tmp_path, logs):
    Trainer(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2"), build_loader=toy_loader).fit(stop_after_epoch=1)
    resumed = Trainer(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2", "TRAIN.EMA_DECAY", "0.9"), build_loader=toy_loader)
    for key, value in weights(resumed.model).items():
        assert torch.equal(value, resumed.ema.module.state_dict()[key]), key
    assert "has no EMA: the EMA starts from its weights" in logs.text


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoints_get_the_users_umask_and_stale_temps_go(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = str(tmp_path / "w.pyth")
        save_checkpoint({"w": torch.ones(2)}, path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    stale = tmp_path / "run" / "checkpoints" / ".tmp_abc_checkpoint_epoch_00001.pyth"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    Trainer(tiny_cfg(tmp_path / "run"), build_loader=toy_loader)
    assert not stale.exists()


def test_no_repeated_epochs_in_log_jsonl_after_a_rerun(tmp_path, logs):
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_PERIOD", "2", "TRAIN.EVAL_PERIOD", "2")
    Trainer(cfg, build_loader=toy_loader).fit(stop_after_epoch=1)  # killed before any checkpoint
    Trainer(cfg, build_loader=toy_loader).fit()  # starts over and writes epoch 1 again
    assert [r["epoch"] for r in read_json_lines(str(tmp_path / "log.jsonl"))] == [1, 2]
    # epoch lines are rounded for people; the config is in log.txt
    line = next(r.getMessage() for r in logs.records if r.getMessage().startswith("epoch 2/2:"))
    assert not re.search(r"\d\.\d{5,}", line), line
    log_txt = (tmp_path / "log.txt").read_text()
    assert "config (merged):" in log_txt and "MODEL_NAME: toy_video" in log_txt


def test_progress_is_a_log_line_when_not_on_a_terminal(logs):
    bar = progress(5, "epoch 1/2", True, period=2)  # pytest's stderr is no terminal
    assert isinstance(bar, LineProgress)
    for _ in range(5):
        bar.set_postfix_str("loss 1.234, lr 0.001")
        bar.update()
    lines = [r.getMessage() for r in logs.records if r.getMessage().startswith("epoch 1/2")]
    assert [line.split()[2] for line in lines] == ["2/5", "4/5", "5/5"]
    assert lines[-1].endswith("loss 1.234, lr 0.001")


# ---------------------------------------------------------------------------------------------


def test_uniformer_local_aggregator_gradient_in_bf16_on_cpu_matches_fp32():
    """torch's CPU depthwise conv3d weight gradient is wrong for channels-last bf16 input (where oneDNN
    runs bf16); the block hands those convolutions contiguous input, so bf16 stays near fp32."""
    torch.manual_seed(0)
    block = CBlock(16, 2.0, Kernels.for_frames(8), 0.0)
    x = torch.randn(2, 16, 4, 16, 16).contiguous(memory_format=torch.channels_last_3d)
    grads = []
    for amp in (False, True):
        block.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = block(x)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({n: block.get_submodule(n).weight.grad.clone() for n in ("attn", "pos_embed")})
    for name, reference in grads[0].items():
        error = (grads[1][name] - reference).norm() / reference.norm()
        assert error < 0.05, (name, error.item())
