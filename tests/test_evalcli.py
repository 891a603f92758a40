"""`vidformer test` beyond plain multi-view: the shipped Kinetics-600/700 class lists, DVT early exit from
the config (given thresholds and a GFLOPs budget), adaptive views, --save-scores and --scores ensembles,
the confusion picture, TensorBoard test metrics and the progress lines of a non-terminal."""

import glob
import json
import math
import os

import pytest
import torch
from torch import nn

from tests.toy import ToyVideo

from vidformer import cli
from vidformer.config import get_cfg
from vidformer.data import load_label_names, make_synthetic_dataset
from vidformer.engine.adaptive import exit_taken, find_thresholds, view_exit_curve
from vidformer.engine.ensemble import aggregate_views, ensemble_scores, load_scores
from vidformer.engine.evaluator import most_confused_pairs, run_test, score_videos, write_confusion_png
from vidformer.errors import UsageError
from vidformer.models import create_model

K = 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = os.path.join(REPO, "vidformer", "data", "labels")


@pytest.mark.parametrize("classes", [400, 600, 700])
def test_kinetics_lists_ship_and_the_configs_resolve_them(classes):
    with open(os.path.join(LABELS, f"kinetics{classes}.txt")) as f:
        names = f.read().splitlines()
    # the official label index order of the released checkpoints: the class names sorted
    assert len(names) == len(set(names)) == classes and names == sorted(names) and all(n.strip() == n for n in names)
    configs = glob.glob(os.path.join(REPO, "configs", f"kinetics{classes}", "*.yaml"))
    assert configs
    for path in configs:
        assert load_label_names(get_cfg(path)) == names, path


# -- DVT early exit from the config ------------------------------------------------------------------

TINY_DVT = ("{'embed_dim': 16, 'depth': 2, 'num_heads': 2, 'reuse_dim': 8, 'reuse_hidden': 16, "
            "'exit_patches': ((4, 16, 16), (2, 11, 11), (2, 8, 8)), 'exit_paddings': ((0, 0, 0), (0, 1, 1), (0, 0, 0))}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    make_synthetic_dataset(root, num_classes=K, train_per_class=2, val_per_class=1, num_frames=16, size=32, seed=0)
    return root


def _cfg(tmp_path, data_dir, *overrides, model="dvt_deit_s"):
    return get_cfg(None, [
        "OUTPUT_DIR", str(tmp_path), "DATA.PATH_TO_DATA_DIR", data_dir, "MODEL.MODEL_NAME", model,
        "MODEL.NUM_CLASSES", str(K), "MODEL.OVERRIDES", TINY_DVT if model == "dvt_deit_s" else "{}",
        "DATA.NUM_FRAMES", "8", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
        "DATA.TRAIN_JITTER_SCALES", "[32, 32]", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1",
        "DATA_LOADER.NUM_WORKERS", "0", *overrides])


@pytest.fixture(scope="module")
def decoded(data, tmp_path_factory):
    """Every split's test items, decoded once for the module (the runs below differ only in the model)."""
    from vidformer.data import iter_test_videos

    cfg = _cfg(tmp_path_factory.mktemp("decode"), data)
    return {split: list(iter_test_videos(cfg, split)) for split in ("train", "val")}


def _from(decoded):
    return lambda cfg, split, rank, world_size: iter(decoded[split])


@pytest.fixture(scope="module")
def dvt():
    torch.manual_seed(0)
    return create_model("dvt_deit_s", num_classes=K, num_frames=8, img_size=32, **eval(TINY_DVT)).eval()


def _hand_early_exit(model, videos, thresholds):
    """top-1 and per-view exits from forward_exits on every view: what real early exit must give."""
    hits, taken, n = 0, [], 0
    for video in videos:
        with torch.no_grad():
            exits = model.forward_exits(video["views"])  # K x (V, classes)
        conf = torch.stack([e.softmax(-1).amax(-1) for e in exits])
        k = exit_taken(conf, torch.tensor(list(thresholds) + [-float("inf")]))
        logits = torch.stack([exits[e][v] for v, e in enumerate(k.tolist())])
        hits += int(aggregate_views(logits, "sum").argmax() == video["label"])
        taken.append(k)
        n += 1
    return 100.0 * hits / n, torch.cat(taken)


@pytest.mark.slow
def test_dvt_thresholds_from_the_config_give_real_early_exit(tmp_path, data, decoded, dvt):
    # thresholds that send about a third of the views out at each exit
    with torch.no_grad():
        exits = dvt.forward_exits(torch.cat([video["views"] for video in decoded["val"]]))
    conf = torch.stack([e.softmax(-1).amax(-1) for e in exits])
    t1, t2 = (math.floor(t * 1e6) / 1e6 for t in find_thresholds(conf, [1 / 3] * 3)[:2].tolist())  # 6 decimals, <= t
    metrics = run_test(_cfg(tmp_path, data, "DVT.THRESHOLDS", f"[{t1}, {t2}]"), model=dvt, iter_videos=_from(decoded))
    adaptive = metrics["adaptive"]
    assert adaptive["source"] == "DVT.THRESHOLDS" and adaptive["thresholds"] == [t1, t2]
    top1, taken = _hand_early_exit(dvt, decoded["val"], [t1, t2])
    shares = torch.bincount(taken, minlength=3).double() / taken.numel()
    assert all(share > 0 for share in shares.tolist())  # every exit takes some views
    assert metrics["top1"] == pytest.approx(top1)
    assert adaptive["exit_shares"] == pytest.approx(shares.tolist(), abs=1e-6)
    cum = adaptive["exit_gflops_cumulative"]
    assert adaptive["avg_gflops_per_view"] == pytest.approx(sum(s * c for s, c in zip(shares.tolist(), cum)), abs=1e-6)
    assert adaptive["full_gflops"] == cum[-1] and cum[0] < cum[1] < cum[2]
    assert metrics["gflops_per_video"] == pytest.approx(2 * adaptive["avg_gflops_per_view"], abs=2e-6)
    assert json.loads((tmp_path / "test_metrics.json").read_text())["adaptive"] == adaptive
    # everyone at the first exit, and nobody before the last: the two ends of the cost range
    first = run_test(_cfg(tmp_path, data, "DVT.THRESHOLDS", "[0.0, 0.0]"), model=dvt, iter_videos=_from(decoded))
    assert first["adaptive"]["exit_shares"] == [1, 0, 0] and first["adaptive"]["avg_gflops_per_view"] == cum[0]
    last = run_test(_cfg(tmp_path, data, "DVT.THRESHOLDS", "[2.0, 2.0]"), model=dvt, iter_videos=_from(decoded))
    assert last["adaptive"]["exit_shares"] == [0, 0, 1]
    assert last["top1"] == pytest.approx(_hand_early_exit(dvt, decoded["val"], [2.0, 2.0])[0])


@pytest.mark.slow
def test_dvt_budget_searched_on_the_calibration_split(tmp_path, data, decoded, dvt):
    from vidformer.engine.adaptive import exit_costs

    cum = [c.cumulative for c in exit_costs(dvt, 8, 32)]
    budget = (cum[0] + cum[2]) / 2
    metrics = run_test(_cfg(tmp_path, data, "DVT.GFLOPS_BUDGET", str(budget), "DVT.CALIBRATION_SPLIT", "train"), model=dvt,
                       iter_videos=_from(decoded))
    adaptive = metrics["adaptive"]
    calibration = adaptive["calibration"]
    assert adaptive["source"] == "DVT.GFLOPS_BUDGET" and len(adaptive["thresholds"]) == 2
    assert calibration["split"] == "train" and calibration["num_views"] == 2 * 2 * K and not calibration["same_as_test"]
    assert calibration["avg_gflops_per_view"] <= budget * (1 + 1e-9)
    with pytest.raises(UsageError, match="DVT.GFLOPS_BUDGET .* below the first exit"):
        run_test(_cfg(tmp_path, data, "DVT.GFLOPS_BUDGET", str(cum[0] / 2)), model=dvt)
    with pytest.raises(UsageError, match="give 2"):
        run_test(_cfg(tmp_path, data, "DVT.THRESHOLDS", "[0.5]"), model=dvt)
    with pytest.raises(UsageError, match="has no exits"):
        run_test(_cfg(tmp_path, data, "DVT.THRESHOLDS", "[0.5]", model="toy_video"), model=ToyVideo(K, 8, 32))


# -- adaptive views, saved scores and ensembles -----------------------------------------------------


class ViewTable(nn.Module):
    """A fixed logit row per view, looked up by the view's first pixel (its id), times a scale."""

    def __init__(self, table, scale=1.0):
        super().__init__()
        self.table, self.scale = table, scale
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.scale * self.table[x[:, 0, 0, 0, 0].long()] + self.anchor


TABLE = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.0], [0.0, 0.0, 3.5, 0.0], [0.2, 0.0, 0.0, 0.4]])
VIDEOS = (([0, 1, 3], 0), ([1, 2, 3], 1), ([3, 1, 2], 2), ([3, 3, 1], 3), ([2, 0, 1], 0))


def _videos(order=None):
    out = []
    for index, (ids, label) in enumerate(VIDEOS):
        views = torch.zeros(3, 3, 1, 2, 2)
        views[:, 0, 0, 0, 0] = torch.tensor(ids, dtype=torch.float)
        out.append({"views": views, "label": label, "index": index, "path": f"v{index}.mp4", "failed": False})
    return [out[i] for i in order] if order else out


def _run(tmp_path, model, *overrides, videos=None):
    cfg = _cfg(tmp_path, "", "TEST.BATCH_SIZE", "2", "DATA.NUM_FRAMES", "1", "TEST.NUM_ENSEMBLE_VIEWS", "3", *overrides,
               model="toy_video")
    return run_test(cfg, model=model, iter_videos=lambda cfg, split, rank, world_size: iter(videos or _videos()))


def test_adaptive_views_report_the_views_used(tmp_path):
    metrics = _run(tmp_path, ViewTable(TABLE), "TEST.ADAPTIVE_VIEWS", "0.9")
    curve = view_exit_curve([TABLE[torch.tensor(ids)] for ids, _ in VIDEOS], [label for _, label in VIDEOS], [0.9])[0]
    views = metrics["adaptive_views"]
    assert views["avg_views"] == pytest.approx(curve["avg_views"]) and metrics["top1"] == pytest.approx(curve["top1"])
    assert 1 < views["avg_views"] < 3 and views["max_views"] == 3 and sum(views["views_used_shares"]) == pytest.approx(1)
    with pytest.raises(UsageError, match="TEST.ADAPTIVE_VIEWS"):
        _run(tmp_path, ViewTable(TABLE), "TEST.ADAPTIVE_VIEWS", "1.5")


def _saved(tmp_path, name, model, *overrides, videos=None):
    out = tmp_path / name
    _run(out, model, "TEST.SAVE_RESULTS", "True", *overrides, videos=videos)
    return str(out / "test_scores.pt")


def test_saved_scores_ensemble_equals_the_hand_ensemble(tmp_path, capsys):
    other = TABLE.roll(1, dims=1)  # a second model that disagrees with the first
    a, b = _saved(tmp_path, "a", ViewTable(TABLE)), _saved(tmp_path, "b", ViewTable(other, 2.0))
    saved = torch.load(a)
    assert saved["view_logits"].shape == (5, 3, K) and saved["paths"][0] == "v0.mp4"
    assert saved["view_rule"].startswith("view k = temporal clip k") and saved["label"].tolist() == [0, 1, 2, 3, 0]
    torch.testing.assert_close(saved["view_logits"][1], TABLE[torch.tensor([1, 2, 3])])
    hand = sum(t[torch.tensor([ids for ids, _ in VIDEOS])].softmax(-1).mean(dim=1) for t in (TABLE, 2.0 * other))
    labels = torch.tensor([label for _, label in VIDEOS])
    top1 = 100.0 * (hand.argmax(-1) == labels).double().mean().item()
    assert cli.main(["test", "OUTPUT_DIR", str(tmp_path / "ens"), "--scores", a, b]) == 0
    metrics = json.loads((tmp_path / "ens" / "test_metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(top1) and metrics["ensemble"]["files"] == [a, b]
    assert json.loads(capsys.readouterr().out.splitlines()[0])["top1"] == pytest.approx(top1)
    with pytest.MonkeyPatch.context() as env:  # under torchrun only rank 0 writes the ensemble's files
        env.setenv("RANK", "1"), env.setenv("WORLD_SIZE", "2"), env.setenv("LOCAL_RANK", "1")
        assert cli.main(["test", "OUTPUT_DIR", str(tmp_path / "rank1"), "--scores", a, b]) == 0
    assert not (tmp_path / "rank1" / "test_metrics.json").exists()
    # a model tested with adaptive views: the views it did not run are NaN and weigh nothing; each model
    # counts as the mean of the views it used
    c = _saved(tmp_path, "c", ViewTable(other, 2.0), "TEST.ADAPTIVE_VIEWS", "0.9")
    adaptive = torch.load(c)
    used = adaptive["views_used"].tolist()
    assert min(used) < 3 and all(adaptive["view_logits"][i, v:].isnan().all() for i, v in enumerate(used))
    hand = torch.stack([TABLE[torch.tensor(ids)].softmax(-1).mean(0)
                        + (2.0 * other)[torch.tensor(ids[:v])].softmax(-1).mean(0) for (ids, _), v in zip(VIDEOS, used)])
    torch.testing.assert_close(ensemble_scores({a: load_scores(a), c: load_scores(c)}, "sum"), hand)


def test_mismatched_or_old_score_files_are_refused(tmp_path, capsys):
    a = _saved(tmp_path, "a", ViewTable(TABLE))
    shuffled = _saved(tmp_path, "c", ViewTable(TABLE), videos=_videos([1, 0, 2, 3, 4]))
    saved = torch.load(shuffled)
    assert saved["paths"][:2] == ["v0.mp4", "v1.mp4"]  # saved in video-index order, whatever order they came in
    fewer = _saved(tmp_path, "d", ViewTable(TABLE), videos=_videos()[:4])
    assert cli.main(["test", "--scores", a, fewer]) == 2
    assert f"'{fewer}' holds 4 videos but '{a}' holds 5" in capsys.readouterr().err
    old = str(tmp_path / "old.pt")
    torch.save({k: v for k, v in torch.load(a).items() if k != "view_logits"}, old)
    assert cli.main(["test", "--scores", a, old]) == 2
    assert "per-video scores only" in capsys.readouterr().err
    assert cli.main(["test", "--scores", a, str(tmp_path / "missing.pt")]) == 2
    assert cli.main(["test"]) == 2 and "--config" in capsys.readouterr().err


# -- pictures, TensorBoard, progress ---------------------------------------------------------------


@pytest.mark.parametrize("classes", [4, 40])
def test_confusion_picture(tmp_path, classes):
    g = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 3, (classes, classes), generator=g) + torch.diag(torch.full((classes,), 8))
    names = [f"class number {i}" for i in range(classes)]
    path = tmp_path / "confusion.png"
    write_confusion_png(str(path), names, confusion, "model on val (5 clips x 1 crop): top-1 50.00 %")
    assert path.stat().st_size > 5000
    pairs = most_confused_pairs(confusion)
    off_diagonal = int((confusion - torch.diag(confusion.diag()) > 0).sum())
    assert len(pairs) == min(20, off_diagonal) and all(t != p for t, p, _ in pairs)
    assert [c for _, _, c in pairs] == sorted((c for _, _, c in pairs), reverse=True)
    assert pairs[0][2] == confusion.fill_diagonal_(0).max()


def test_test_metrics_and_hparams_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = _run(tmp_path, ViewTable(TABLE))
    assert "adaptive" not in metrics and "adaptive_views" not in metrics
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Scalars("test/top1")[0].value == pytest.approx(metrics["top1"])
    hparams = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"toy_video" in hparams and b"3 clips x 1 crop" in hparams
    assert events.Scalars("hparam/test_top1")[0].value == pytest.approx(metrics["top1"])


def test_progress_is_lines_with_a_total_when_not_a_terminal(tmp_path, capsys):
    from vidformer.engine.runlog import setup_logging

    setup_logging(None, True)
    score_videos(ViewTable(TABLE), _videos(), method="sum", chunk=2, total=5, show=True, log_period=2)
    lines = [line for line in capsys.readouterr().err.splitlines() if "test:" in line]
    assert [line.split("test: ")[1].split(" videos")[0] for line in lines] == ["2/5", "4/5", "5/5"]
