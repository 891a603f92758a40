"""The training engine on tiny models and in-memory clips: optimizer groups, schedule, AMP, exact
resume, non-finite losses, multi-exit losses, logs/checkpoints, and two-process gloo DDP."""

import math
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tests.toy import ToyVideo
from vidformer.checkpoint import load_checkpoint_file
from vidformer.config import get_cfg
from vidformer.errors import UsageError
from vidformer.engine import distributed as du
from vidformer.engine.optim import WarmupCosine, param_groups
from vidformer.engine.runlog import read_json_lines
from vidformer.engine.trainer import NonFiniteLossError, Trainer, latest_checkpoint

FRAMES, SIZE, CLASSES = 4, 32, 4


class ToyClips(Dataset):
    """Clips whose class is a brightness ramp over time (so a video model can learn it); `nan_index`
    makes one clip all-NaN to provoke a non-finite loss."""

    def __init__(self, n: int, seed: int, nan_index: tuple[int, ...] = ()):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % CLASSES
        ramp = torch.linspace(-1, 1, FRAMES)[None, :, None, None]
        self.videos = [0.3 * torch.randn(3, FRAMES, SIZE, SIZE, generator=g) + ramp * (int(lbl) - 1.5)
                       for lbl in self.labels]
        for i in nan_index:
            self.videos[i] = torch.full_like(self.videos[i], float("nan"))
        self.records = [SimpleNamespace(path=f"toy/clip_{i:03d}.mp4", label=int(lbl)) for i, lbl in enumerate(self.labels)]

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"video": self.videos[i], "label": self.labels[i], "index": i}


def toy_loader(cfg, split, *, rank=0, world_size=1, seed=None, local_world_size=None, nan_index=(), val_size=8):
    train = split == "train"
    ds = ToyClips(16 if train else val_size, seed=1 if train else 2, nan_index=nan_index if train else ())
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=train, seed=seed or 0)
    return DataLoader(ds, batch_size=cfg.TRAIN.BATCH_SIZE // (local_world_size or world_size), sampler=sampler,
                      drop_last=train)


def tiny_cfg(tmp_path, *overrides):
    return get_cfg(None, [
        "OUTPUT_DIR", str(tmp_path), "MODEL.MODEL_NAME", "toy_video", "MODEL.NUM_CLASSES", str(CLASSES),
        "DATA.NUM_FRAMES", str(FRAMES), "DATA.TRAIN_CROP_SIZE", str(SIZE), "DATA.TEST_CROP_SIZE", str(SIZE),
        "MODEL.DROPOUT_RATE", "0.0", "MODEL.DROPPATH_RATE", "0.0", "TRAIN.BATCH_SIZE", "4",
        "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "0.5", "SOLVER.BASE_LR", "0.01",
        "SOLVER.WARMUP_START_LR", "0.001", "SOLVER.COSINE_END_LR", "0.0001", "TRAIN.EVAL_PERIOD", "1",
        "TRAIN.CHECKPOINT_PERIOD", "1", "MIXUP.LABEL_SMOOTH_VALUE", "0.0", "LOG_PERIOD", "1", *overrides])


def weights(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------


class _Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 8))
        self.patch = nn.Linear(8, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(3))
        self.head = nn.Linear(8, 2)

    def no_weight_decay(self):
        return {"cls_token"}


def test_param_groups_exempt_1d_params_and_named_ones_and_decay_by_depth():
    groups = param_groups(_Blocks(), 0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["cls_token"]["weight_decay"] == 0.0  # named by no_weight_decay() although 2-D
    assert by_name["patch.bias"]["weight_decay"] == 0.0 and by_name["blocks.0.0.weight"]["weight_decay"] == 0.0
    assert by_name["patch.weight"]["weight_decay"] == 0.05 and by_name["head.weight"]["weight_decay"] == 0.05
    # 3 blocks -> layers 0 (embed) .. 4 (head); scale = 0.5 ** (4 - layer)
    assert by_name["patch.weight"]["lr_scale"] == 0.5 ** 4
    assert by_name["blocks.0.1.weight"]["lr_scale"] == 0.5 ** 3
    assert by_name["blocks.2.1.weight"]["lr_scale"] == 0.5 ** 1
    assert by_name["head.weight"]["lr_scale"] == 1.0


def test_warmup_cosine_schedule_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupCosine(opt, base_lr=1.0, start_lr=0.1, end_lr=0.01, warmup_steps=10, total_steps=110)
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(5) == pytest.approx(0.55)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down the cosine
    assert s.lr_at(110) == pytest.approx(0.01)
    for _ in range(5):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.55)


def test_distributed_env_from_torchrun_and_slurm():
    assert du.detect_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == du.DistEnv(3, 8, 1, "torchrun")
    assert du.detect_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}).processes_per_node == 4
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "2", "SLURM_STEP_TASKS_PER_NODE": "8(x2),4"}
    assert du.detect_env(slurm) == du.DistEnv(5, 16, 1, "slurm", 4)
    assert du.detect_env({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == du.DistEnv()


@pytest.mark.parametrize("precision", ["none", "bf16"])
def test_trains_and_learns(tmp_path, precision):
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path, "TRAIN.MIXED_PRECISION", precision, "SOLVER.MAX_EPOCH", "4")
    trainer = Trainer(cfg, build_loader=toy_loader)
    before = weights(trainer.model)
    records = trainer.fit()
    assert len(trainer.history) == 4 * 4 and all(math.isfinite(v) for v in trainer.history)
    assert not torch.equal(before["head.weight"], trainer.model.state_dict()["head.weight"])
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["val_top1"] > 50.0  # chance is 25 %


FAMILY = ("MODEL.MODEL_NAME", "poolformer_s12", "MODEL.OVERRIDES", "{'depths': [1, 1, 1, 1], 'dims': [8, 16, 16, 16]}",
          "SOLVER.MAX_EPOCH", "1")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["none", "bf16"])
def test_family_model_same_steps_with_and_without_activation_checkpointing(tmp_path, precision):
    runs = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(tiny_cfg(tmp_path / str(ckpt), *FAMILY, "MODEL.ACT_CHECKPOINT", str(ckpt),
                                   "TRAIN.MIXED_PRECISION", precision), build_loader=toy_loader)
        assert trainer.model.grad_checkpointing is ckpt
        trainer.fit()
        runs.append(trainer.history)
    assert all(math.isfinite(v) for v in runs[0]) and runs[1] == pytest.approx(runs[0], rel=1e-4)


@pytest.mark.slow
def test_mixup_trains_on_soft_targets(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(tiny_cfg(tmp_path, *FAMILY, "MIXUP.ENABLE", "True", "MIXUP.LABEL_SMOOTH_VALUE", "0.1"),
                      build_loader=toy_loader)
    batch = next(iter(trainer.train_loader))
    video, target = trainer.mixup(batch["video"], batch["label"])
    assert target.shape == (4, CLASSES) and torch.allclose(target.sum(1), torch.ones(4))
    trainer.fit()
    assert len(trainer.history) == 4 and all(math.isfinite(v) for v in trainer.history)


def test_outputs_logs_and_checkpoint_contents(tmp_path):
    cfg = tiny_cfg(tmp_path, "TRAIN.EMA_DECAY", "0.9")
    Trainer(cfg, build_loader=toy_loader).fit()
    lines = read_json_lines(str(tmp_path / "log.jsonl"))
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "lr", "val_top1", "val_top5", "val_ema_top1", "clips_per_s", "data_time_s"} <= set(lines[0])
    assert (tmp_path / "checkpoints" / "config.yaml").read_text() == cfg.dump()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tensorboard"))
    path = latest_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_epoch_00002.pyth")
    ckpt = load_checkpoint_file(path)  # weights_only: everything in it is plain data
    assert {"model_state", "optimizer_state", "scheduler", "scaler", "epoch", "step", "rng", "cfg", "ema_state"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 8 and ckpt["scheduler"]["step_count"] == 8


@pytest.mark.slow
def test_kill_and_resume_gives_identical_weights(tmp_path):
    full = Trainer(tiny_cfg(tmp_path / "full", "SOLVER.MAX_EPOCH", "3", "TRAIN.EMA_DECAY", "0.5"),
                   build_loader=toy_loader)
    full.fit()
    cfg = tiny_cfg(tmp_path / "cut", "SOLVER.MAX_EPOCH", "3", "TRAIN.EMA_DECAY", "0.5")
    Trainer(cfg, build_loader=toy_loader).fit(stop_after_epoch=1)
    torch.manual_seed(1234)  # a different process would start from other random streams
    resumed = Trainer(cfg, build_loader=toy_loader)  # TRAIN.AUTO_RESUME finds checkpoint_epoch_00001
    assert resumed.epoch == 1 and resumed.step == 4
    resumed.fit()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in full.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[key]), key


def test_compiled_training_keeps_plain_checkpoints_and_resumes_either_way(tmp_path):
    """MODEL.COMPILE (aot_eager: dynamo's capture and autograd tracing, eager kernels) trains like eager; its
    checkpoints hold the plain model's keys, so an eager run resumes a compiled one and the reverse."""
    from torch._dynamo.utils import counters

    common = ("SOLVER.MAX_EPOCH", "2", "TRAIN.EMA_DECAY", "0.5", "MODEL.COMPILE_BACKEND", "aot_eager")
    compiled = ("MODEL.COMPILE", "True")
    torch.manual_seed(0)
    eager = Trainer(tiny_cfg(tmp_path / "eager", *common), build_loader=toy_loader)
    eager.fit()
    graphs = counters["stats"]["unique_graphs"]
    for name, first, second in (("compiled_then_eager", compiled, ()), ("eager_then_compiled", (), compiled)):
        torch.manual_seed(0)
        cut = Trainer(tiny_cfg(tmp_path / name, *common, *first), build_loader=toy_loader)
        cut.fit(stop_after_epoch=1)
        ckpt = load_checkpoint_file(latest_checkpoint(str(tmp_path / name)))
        assert list(ckpt["model_state"]) == list(ckpt["ema_state"]) == list(eager.model.state_dict())
        resumed = Trainer(tiny_cfg(tmp_path / name, *common, *second), build_loader=toy_loader)
        assert resumed.step == 4
        resumed.fit()
        for key, value in eager.model.state_dict().items():
            torch.testing.assert_close(resumed.model.state_dict()[key], value, atol=1e-5, rtol=1e-4, msg=key)
        for key, value in eager.ema.module.state_dict().items():
            torch.testing.assert_close(resumed.ema.module.state_dict()[key], value, atol=1e-5, rtol=1e-4, msg=key)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo did capture the training forward


def test_nonfinite_loss_is_skipped_and_reported(tmp_path, caplog):
    def loader(cfg, split, **kw):
        return toy_loader(cfg, split, nan_index=(5,), **kw)

    trainer = Trainer(tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1"), build_loader=loader)
    trainer.logger.propagate = True  # let caplog see the warning
    records = trainer.fit()
    assert records[0]["nonfinite_steps"] == 1 and math.isfinite(records[0]["train_loss"])
    assert sum(math.isnan(v) for v in trainer.history) == 1
    assert "toy/clip_005.mp4" in caplog.text
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_consecutive_nonfinite_losses_stop_the_run_naming_videos(tmp_path):
    def loader(cfg, split, **kw):
        return toy_loader(cfg, split, nan_index=tuple(range(16)), **kw)

    trainer = Trainer(tiny_cfg(tmp_path, "TRAIN.MAX_NONFINITE_STEPS", "3"), build_loader=loader)
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite losses in a row.*toy/clip_\d{3}\.mp4"):
        trainer.fit()


class TwoExits(ToyVideo):
    """A cascade stand-in: two exits whose logits differ by a constant factor."""

    def forward_exits(self, x):
        logits = self(x)
        return [logits, 2 * logits]


def test_models_with_exits_train_on_the_sum_of_exit_losses(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_EPOCH", "1", "SOLVER.CLIP_GRAD_L2NORM", "0.0")
    torch.manual_seed(0)
    model = TwoExits(num_classes=CLASSES, num_frames=FRAMES, img_size=SIZE)
    trainer = Trainer(cfg, model=model, build_loader=toy_loader)
    batch = next(iter(trainer.train_loader))
    with torch.no_grad():
        logits = model(batch["video"])
        expected = (nn.functional.cross_entropy(logits, batch["label"])
                    + nn.functional.cross_entropy(2 * logits, batch["label"])).item()
    assert trainer._forward_backward(batch, window_end=True) == pytest.approx(expected, rel=1e-5)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    # SGD: Adam's normalisation would magnify float-rounding differences of near-zero gradients
    common = ("SOLVER.MAX_EPOCH", "1", "SOLVER.OPTIMIZING_METHOD", "sgd")
    torch.manual_seed(0)
    big = Trainer(tiny_cfg(tmp_path / "big", *common, "TRAIN.BATCH_SIZE", "8"), build_loader=toy_loader)
    start = weights(big.model)
    big.fit()
    # the same sample order in batches of 4, two per optimizer step
    small = Trainer(tiny_cfg(tmp_path / "small", *common, "TRAIN.GRAD_ACCUM_STEPS", "2"), build_loader=toy_loader)
    small.model.load_state_dict(start)
    small.fit()
    assert small.step == big.step == 2 and small.global_clips == big.global_clips == 8
    for key, value in big.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# two processes, gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# SGD so that weights can be compared tightly (Adam magnifies rounding in near-zero gradients)
_DDP_CFG = ("SOLVER.OPTIMIZING_METHOD", "sgd", "SOLVER.BASE_LR", "0.1")


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = du.init_distributed(du.DistEnv(rank, world_size, rank, "torchrun"))
    try:
        torch.manual_seed(0)
        cfg = tiny_cfg(out_dir, *_DDP_CFG)
        trainer = Trainer(cfg, model=ToyVideo(num_classes=CLASSES, num_frames=FRAMES, img_size=SIZE),
                          build_loader=toy_loader, env=env)
        trainer.fit()
        torch.save({"history": trainer.history, "weights": trainer.model.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        du.shutdown()


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    torch.manual_seed(0)
    single = Trainer(tiny_cfg(tmp_path / "one", *_DDP_CFG), model=ToyVideo(num_classes=CLASSES, num_frames=FRAMES, img_size=SIZE),
                     build_loader=toy_loader)
    single.fit()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in range(2)]
    assert len(ranks[0]["history"]) == len(single.history) == 8
    for r in ranks:
        assert r["history"] == pytest.approx(single.history, rel=1e-4, abs=1e-5)
        for key, value in single.model.state_dict().items():
            torch.testing.assert_close(r["weights"][key], value, atol=1e-6, rtol=1e-5)
    one, two = (read_json_lines(str(tmp_path / name / "log.jsonl")) for name in ("one", "two"))
    assert [r["train_loss"] for r in two] == pytest.approx([r["train_loss"] for r in one], rel=1e-5)
    assert [r["val_top1"] for r in two] == [r["val_top1"] for r in one]


def test_checkpoint_file_continues_its_run_unless_epoch_reset(tmp_path):
    first = Trainer(tiny_cfg(tmp_path / "a", "SOLVER.MAX_EPOCH", "1"), build_loader=toy_loader)
    first.fit()
    path = latest_checkpoint(str(tmp_path / "a"))
    fine_tune = Trainer(tiny_cfg(tmp_path / "b", "TRAIN.CHECKPOINT_FILE_PATH", path), build_loader=toy_loader)
    assert fine_tune.epoch == 0 and torch.equal(fine_tune.model.head.weight, first.model.head.weight)
    carry_on = Trainer(tiny_cfg(tmp_path / "c", "TRAIN.CHECKPOINT_FILE_PATH", path,
                                "TRAIN.CHECKPOINT_EPOCH_RESET", "False"), build_loader=toy_loader)
    assert (carry_on.epoch, carry_on.step) == (1, 4)
    weights_only = str(tmp_path / "weights.pth")
    torch.save({"model_state": first.model.state_dict()}, weights_only)
    with pytest.raises(UsageError, match="not a vidformer training checkpoint"):
        Trainer(tiny_cfg(tmp_path / "d", "TRAIN.CHECKPOINT_FILE_PATH", weights_only,
                         "TRAIN.CHECKPOINT_EPOCH_RESET", "False"), build_loader=toy_loader)


def test_initial_weights_that_do_not_fit_are_refused_unless_allowed(tmp_path):
    model = Trainer(tiny_cfg(tmp_path / "a", "SOLVER.MAX_EPOCH", "1"), build_loader=toy_loader).model
    state = model.state_dict()
    half = str(tmp_path / "half.pth")
    torch.save(dict(list(state.items())[: len(state) // 2]), half)
    with pytest.raises(UsageError, match="does not fit the model"):
        Trainer(tiny_cfg(tmp_path / "b", "TRAIN.CHECKPOINT_FILE_PATH", half), build_loader=toy_loader)
    allowed = Trainer(tiny_cfg(tmp_path / "c", "TRAIN.CHECKPOINT_FILE_PATH", half, "TRAIN.ALLOW_PARTIAL", "True"),
                      build_loader=toy_loader)
    first = next(iter(state))
    assert torch.equal(allowed.model.state_dict()[first], state[first])
