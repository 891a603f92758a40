"""DVT cascade (exits, reuse, real early exit, official checkpoint layout) and adaptive inference
(threshold search, curve files, adaptive multi-view testing), on tiny models and random data."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidformer.engine.adaptive import (adaptive_views, budget_curve, collect_exit_probs, early_exit_evaluate,
                                       evaluate_thresholds, exit_costs, exit_proportions, find_thresholds,
                                       search_thresholds, view_exit_curve, write_curve)
from vidformer.errors import UsageError
from vidformer.models import create_model

# 32 px crops: token grids 2x2 -> 3x3 -> 4x4 (the 7 -> 10 -> 14 of 224 px, shrunk)
TINY = dict(embed_dim=16, depth=2, num_heads=2, reuse_dim=8, reuse_hidden=16,
            exit_patches=((4, 16, 16), (2, 11, 11), (2, 8, 8)), exit_paddings=((0, 0, 0), (0, 1, 1), (0, 0, 0)))


def tiny(num_frames=8, **kw):
    torch.manual_seed(0)
    return create_model("dvt_deit_s", num_classes=5, num_frames=num_frames, img_size=32, **dict(TINY, **kw))


@pytest.mark.parametrize("num_frames", [1, 8])
@pytest.mark.parametrize("feature_reuse,relation_reuse", [(True, True), (False, False)])
def test_cascade_runs_and_trains_every_exit(num_frames, feature_reuse, relation_reuse):
    model = tiny(num_frames, feature_reuse=feature_reuse, relation_reuse=relation_reuse)
    x = torch.randn(3, 3, num_frames, 32, 32)
    exits = model.forward_exits(x)
    assert [o.shape for o in exits] == [(3, 5)] * 3
    loss = sum(nn.functional.cross_entropy(o, torch.tensor([0, 1, 2])) for o in exits)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_exits(x)[-1])
    t = 1 if num_frames == 1 else 2
    assert model.token_grids == [(t, 2, 2), (2 * t if t > 1 else 1, 3, 3), (2 * t if t > 1 else 1, 4, 4)]


def test_image_model_is_2d_and_takes_4d_input():
    model = tiny(1).eval()
    assert model.exits[0].patch_embed.proj.weight.shape == (16, 3, 16, 16)
    assert model.exits[1].pos_embed_temporal is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.unsqueeze(2)))


@pytest.mark.parametrize("flag", ["feature_reuse", "relation_reuse"])
def test_reuse_switch_decides_whether_upstream_weights_reach_exit_two(flag):
    other = "relation_reuse" if flag == "feature_reuse" else "feature_reuse"
    x = torch.randn(2, 3, 8, 32, 32)
    for on in (True, False):
        model = tiny(**{flag: on, other: False}).eval()
        with torch.no_grad():
            before = model.forward_exits(x)[1]
            model.exits[0].blocks[0].attn.qkv.weight.normal_(0.0, 1.0)  # only exit 1 changes
            after = model.forward_exits(x)[1]
        # at init the reuse paths are weak (weights of std 0.02), but any dependence shows; none is exactly 0
        assert ((after - before).abs().max().item() > 0.0) == on


def test_early_exit_removes_samples_from_later_exits():
    model = tiny(8).eval()
    torch.manual_seed(1)
    x = torch.randn(8, 3, 8, 32, 32)
    with torch.no_grad():
        full = model.forward_exits(x)
    conf = [o.softmax(-1).amax(-1) for o in full]
    # thresholds that send exactly the 3 most confident clips out at exit 1, then 2 of the rest at exit 2
    t1 = conf[0].sort(descending=True).values[2].item()
    left = conf[0] < t1
    t2 = conf[1][left].sort(descending=True).values[1].item()
    model.reset_exit_counts()
    logits, index = model.forward_early_exit(x, [t1, t2])
    assert model.exit_counts == [8, 5, 3]
    assert torch.bincount(index, minlength=3).tolist() == [3, 2, 3]
    for i, k in enumerate(index.tolist()):  # each clip's logits are those of the exit it took, batch or not
        torch.testing.assert_close(logits[i], full[k][i], atol=1e-5, rtol=1e-4)


def test_everyone_leaves_at_exit_one_with_threshold_zero():
    model = tiny(1).eval()
    model.reset_exit_counts()
    _, index = model.forward_early_exit(torch.randn(4, 3, 32, 32), [0.0, 0.0])
    assert model.exit_counts == [4, 0, 0] and index.tolist() == [0, 0, 0, 0]


def _fake_split(n=400, classes=10, seed=0):
    """Exit probabilities where later exits are more often right (like a trained cascade)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    probs = []
    for strength in (1.0, 2.0, 3.5):
        logits = torch.randn(n, classes, generator=g)
        logits[torch.arange(n), labels] += strength * torch.rand(n, generator=g) * 2
        probs.append(logits.softmax(-1))
    return torch.stack(probs), labels


def test_find_thresholds_sends_the_requested_share_to_each_exit():
    probs, labels = _fake_split()
    conf = probs.max(-1).values
    p = exit_proportions(0.5, 3)
    assert p == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    t = find_thresholds(conf, p)
    point = evaluate_thresholds(probs, labels, t, [1.0, 3.0, 6.0])
    assert point.exit_fractions[0] == pytest.approx(math.floor(400 * p[0]) / 400)
    assert point.exit_fractions[1] == pytest.approx(math.floor(400 * p[1]) / 400)
    assert t[-1] == -math.inf


@pytest.mark.parametrize("target", [1.5, 2.5, 4.0])
def test_threshold_search_meets_gflops_budget_on_its_split(target):
    probs, labels = _fake_split()
    cum = [1.0, 3.0, 6.0]
    point = search_thresholds(probs, labels, cum, target_gflops=target)
    assert point.gflops <= target
    again = evaluate_thresholds(probs, labels, torch.tensor(point.thresholds), cum)
    assert again.gflops == pytest.approx(point.gflops) and again.top1 == pytest.approx(point.top1)
    # no point of the curve within the budget is more accurate
    assert all(p.top1 <= point.top1 for p in budget_curve(probs, labels, cum) if p.gflops <= target)


def test_threshold_search_spends_the_budget_when_top1_ties():
    # every exit right on every clip: all points tie at 100 %, and the search keeps the one nearest the budget
    labels = torch.arange(40) % 4
    probs = torch.full((3, 40, 4), 0.1)
    probs[:, torch.arange(40), labels] = torch.linspace(0.5, 0.7, 40)
    cum = [1.0, 3.0, 6.0]
    point = search_thresholds(probs, labels, cum, target_gflops=3.6)
    assert point.top1 == 100.0
    assert point.gflops == max(p.gflops for p in budget_curve(probs, labels, cum) if p.gflops <= 3.6)
    assert 3.0 < point.gflops <= 3.6


def test_threshold_search_for_accuracy_and_impossible_targets():
    probs, labels = _fake_split()
    cum = [1.0, 3.0, 6.0]
    last_exit = 100.0 * (probs[-1].argmax(-1) == labels).double().mean().item()
    point = search_thresholds(probs, labels, cum, target_top1=last_exit - 1.0)
    assert point.top1 >= last_exit - 1.0 and point.gflops < 6.0
    with pytest.raises(UsageError, match="below the first exit"):
        search_thresholds(probs, labels, cum, target_gflops=0.5)
    with pytest.raises(UsageError, match="exactly one"):
        search_thresholds(probs, labels, cum)


def test_curve_written_as_csv_and_png(tmp_path):
    probs, labels = _fake_split()
    points = budget_curve(probs, labels, [1.0, 3.0, 6.0])
    write_curve(points, str(tmp_path / "curve.csv"), str(tmp_path / "curve.png"), chosen=points[3],
                exit_points=[(1.0, 40.0), (3.0, 60.0), (6.0, 70.0)])
    rows = list(csv.DictReader(open(tmp_path / "curve.csv")))
    assert len(rows) == len(points)
    assert float(rows[0]["gflops"]) == pytest.approx(1.0) and float(rows[-1]["gflops"]) == pytest.approx(6.0)
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_real_early_exit_agrees_with_simulation_and_exit_costs():
    model = tiny(1).eval()
    torch.manual_seed(2)
    loader = [{"video": torch.randn(6, 3, 1, 32, 32), "label": torch.randint(0, 5, (6,))} for _ in range(2)]
    costs = exit_costs(model)
    cum = [c.cumulative for c in costs]
    assert cum[0] < cum[1] < cum[2] and costs[1].feature_reuse > 0 and costs[1].relation_reuse > 0
    probs, labels = collect_exit_probs(model, loader)
    point = search_thresholds(probs, labels, cum, target_gflops=(cum[0] + cum[2]) / 2)
    real = early_exit_evaluate(model, loader, point.thresholds, costs)
    assert real["top1"] == pytest.approx(point.top1)
    assert real["gflops"] == pytest.approx(point.gflops, rel=1e-6)
    assert real["exit_fractions"] == pytest.approx(point.exit_fractions)


class _ViewModel(nn.Module):
    """Returns a fixed logit row per view, looked up from the first pixel (the view's id)."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.table[x[:, 0, 0, 0, 0].long()]


def test_adaptive_views_stops_when_confident_and_matches_the_curve():
    table = torch.tensor([[4.0, 0.0], [0.0, 0.5], [0.0, 4.0], [0.3, 0.0]])
    videos, logits = [], []
    for ids, label in (([0, 1, 3], 0), ([1, 2, 3], 1), ([3, 1, 2], 1)):
        views = torch.zeros(3, 3, 1, 2, 2)
        views[:, 0, 0, 0, 0] = torch.tensor(ids, dtype=torch.float)
        videos.append({"views": views, "label": label, "failed": False})
        logits.append(table[torch.tensor(ids)])
    model = _ViewModel(table)
    out = adaptive_views(model, videos, threshold=0.9)
    # video 1 stops after view 1 (p=0.98), video 2 after view 2 (mean 0.69 < 0.9 -> all 3), video 3 takes all
    assert out["avg_views"] == pytest.approx((1 + 3 + 3) / 3)
    assert out["top1"] == pytest.approx(100.0)
    curve = view_exit_curve(logits, [0, 1, 1], [0.9, 0.0])
    assert curve[0]["avg_views"] == pytest.approx(out["avg_views"]) and curve[0]["top1"] == out["top1"]
    assert curve[1]["avg_views"] == 1.0


def test_official_layout_keys_convert_to_model_keys():
    from vidformer.checkpoint import load_pretrained

    model = tiny(1)
    official = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        name = ("less_less_token", "less_token", "normal_token")[int(parts[1])] + "." + ".".join(parts[2:])
        name = (name.replace(".reuse.norm.", ".feature_resuse_mlp.0.").replace(".reuse.mlp.", ".feature_resuse_mlp.1.")
                .replace(".relation_reuse.fc1.", ".relation_reuse_conv.0.")
                .replace(".relation_reuse.fc2.", ".relation_reuse_conv.2."))
        official[name] = v + 0.5
    fresh = tiny(1)
    report = load_pretrained(fresh, official, strict=True)
    assert report.layout == "dvt_official" and len(report.loaded) == len(official)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k] + 0.5)


def test_pos_embed_layout_names_each_exit_grid():
    model = tiny(8)
    assert model.pos_embed_layout("exits.2.pos_embed") == (1, (1, 4, 4))
    assert model.pos_embed_layout("exits.2.pos_embed_temporal") is None
    assert model.no_weight_decay() >= {"exits.0.pos_embed", "exits.0.cls_token", "exits.2.pos_embed_temporal"}


def test_a_checkpoint_with_another_class_count_drops_every_exit_head():
    from vidformer.checkpoint import load_pretrained

    source = tiny(num_frames=1)
    target = create_model("dvt_deit_s", num_classes=3, num_frames=1, img_size=32, **TINY)
    report = load_pretrained(target, source.state_dict())
    assert set(report.dropped) == {f"exits.{k}.head.{n}" for k in range(3) for n in ("weight", "bias")}
    assert not report.mismatched and report.checkpoint_num_classes == 5


@pytest.mark.parametrize("up_grid, grid", [((1, 7, 7), (1, 10, 10)), ((2, 3, 4), (4, 5, 4)), ((1, 10, 10), (1, 14, 14))])
def test_reuse_resizes_by_matrix_equal_the_upsample_and_pooling(up_grid, grid):
    from vidformer.models import dvt

    torch.manual_seed(0)
    n_up, n = math.prod(up_grid), math.prod(grid)
    feature = dvt.FeatureReuse(16, 8, 6).eval()
    upstream = torch.randn(2, 1 + n_up, 16)
    ctx = feature.mlp(feature.norm(upstream))[:, 1:].transpose(1, 2).reshape(2, 6, *up_grid)
    expected = dvt.area_resize(ctx, grid).flatten(2).transpose(1, 2)
    out = feature(upstream, up_grid, grid)
    assert out.shape == (2, 1 + n, 6) and torch.equal(out[:, 0], torch.zeros(2, 6))
    torch.testing.assert_close(out[:, 1:], expected, rtol=0, atol=1e-6)

    relation = dvt.RelationReuse(3).eval()
    logits = [torch.randn(2, 1, 1 + n_up, 1 + n_up) for _ in range(3)]
    # the MLP as the official code runs it: 1x1 Conv2d's over the (B, L*h, 1 + N_up, 1 + N_up) logits
    hidden = relation.act(F.conv2d(torch.cat(logits, dim=1), relation.fc1.weight, relation.fc1.bias))
    rel = F.conv2d(hidden, relation.fc2.weight, relation.fc2.bias)
    keys = torch.cat([rel[..., :1], dvt.area_resize(rel[..., 1:].reshape(2, -1, *up_grid), grid).reshape(2, 3, 1 + n_up, n)], -1)
    keys = keys.transpose(-1, -2)  # (2, 3, 1 + N, 1 + N_up): now resize the queries the same way
    both = torch.cat([keys[..., :1], dvt.area_resize(keys[..., 1:].reshape(2, -1, *up_grid), grid).reshape(2, 3, 1 + n, n)], -1)
    out = torch.cat(relation(logits, up_grid, grid), dim=1)
    torch.testing.assert_close(out, both.transpose(-1, -2), rtol=0, atol=1e-6)
