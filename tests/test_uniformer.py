"""UniFormer: published geometry, image/video equivalence, official checkpoint layouts, training switches.

No installable package holds a UniFormer reference. Two stand-ins:
- fixtures/uniformer_official_tiny.safetensors: a tiny random image and video UniFormer run by the
  official Sense-X/UniFormer model code (not in this repository) in eval mode: its weights, an input
  and the logits it gave (weights and inputs are fp16-exact, logits fp32);
- `official_state_dict` below: random tensors keyed and shaped as the official image
  (`models/uniformer.py`, DeiT `model` container) and video (`slowfast/models/uniformer.py`, PySlowFast
  `model_state`) models save them, spelled out from the official module definitions.
"""

import ast
import os

import pytest
import torch
from safetensors import safe_open

import vidformer
from vidformer.checkpoint import load_pretrained
from vidformer.errors import UsageError
from vidformer.flops import model_flops
from vidformer.layers import fuse_for_inference

TINY = dict(dims=(16, 32, 32, 64), depths=(1, 2, 1, 1), head_dim=16)
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "uniformer_official_tiny.safetensors")


def tiny(num_frames, num_classes=10, **kw):
    return vidformer.create_model("uniformer_s", num_classes=num_classes, num_frames=num_frames, img_size=32,
                                  **{**TINY, **kw})


def randomize_norms(model):
    """Non-trivial BatchNorm statistics and affine parameters, so equivalence tests can fail."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm3d, torch.nn.LayerNorm)):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
    return model


def official_state_dict(depths, dims, num_classes, video, head_dim=16, mlp_ratio=4):
    """Random tensors under the official UniFormer keys and shapes (video: every conv weight is 5-D)."""
    g = torch.Generator().manual_seed(2)

    def conv(o, i, kt, k):
        shape = (o, i, kt, k, k) if video else (o, i, k, k)
        return torch.randn(shape, generator=g) * 0.1

    def vec(n, base=0.0):
        return base + 0.1 * torch.randn(n, generator=g)

    def bn(prefix, d):
        return {f"{prefix}.weight": vec(d, 1), f"{prefix}.bias": vec(d), f"{prefix}.running_mean": vec(d),
                f"{prefix}.running_var": 1 + torch.rand(d, generator=g), f"{prefix}.num_batches_tracked": torch.tensor(7)}

    sd = {}
    ins = (3,) + tuple(dims[:-1])
    for s in range(4):
        p, d = f"patch_embed{s + 1}", dims[s]
        # stem conv_3xnxn (3x4x4, stride 2x4x4); later patch embeds conv_1xnxn (1x2x2)
        sd[f"{p}.proj.weight"] = conv(d, ins[s], 3 if s == 0 else 1, 4 if s == 0 else 2)
        sd.update({f"{p}.proj.bias": vec(d), f"{p}.norm.weight": vec(d, 1), f"{p}.norm.bias": vec(d)})
        for j in range(depths[s]):
            b, h = f"blocks{s + 1}.{j}", d * mlp_ratio
            sd.update({f"{b}.pos_embed.weight": conv(d, 1, 3, 3), f"{b}.pos_embed.bias": vec(d)})
            if s < 2:  # CBlock: BN, conv1 -> depthwise 5x5x5 attn -> conv2, conv MLP
                sd.update(bn(f"{b}.norm1", d))
                sd.update({f"{b}.conv1.weight": conv(d, d, 1, 1), f"{b}.conv1.bias": vec(d),
                           f"{b}.conv2.weight": conv(d, d, 1, 1), f"{b}.conv2.bias": vec(d),
                           f"{b}.attn.weight": conv(d, 1, 5, 5), f"{b}.attn.bias": vec(d)})
                sd.update(bn(f"{b}.norm2", d))
                sd.update({f"{b}.mlp.fc1.weight": conv(h, d, 1, 1), f"{b}.mlp.fc1.bias": vec(h),
                           f"{b}.mlp.fc2.weight": conv(d, h, 1, 1), f"{b}.mlp.fc2.bias": vec(d)})
            else:  # SABlock: LN, Attention(qkv, proj), LN, Linear MLP
                sd.update({f"{b}.norm1.weight": vec(d, 1), f"{b}.norm1.bias": vec(d),
                           f"{b}.attn.qkv.weight": 0.1 * torch.randn(3 * d, d, generator=g),
                           f"{b}.attn.qkv.bias": vec(3 * d),
                           f"{b}.attn.proj.weight": 0.1 * torch.randn(d, d, generator=g), f"{b}.attn.proj.bias": vec(d),
                           f"{b}.norm2.weight": vec(d, 1), f"{b}.norm2.bias": vec(d),
                           f"{b}.mlp.fc1.weight": 0.1 * torch.randn(h, d, generator=g), f"{b}.mlp.fc1.bias": vec(h),
                           f"{b}.mlp.fc2.weight": 0.1 * torch.randn(d, h, generator=g), f"{b}.mlp.fc2.bias": vec(d)})
    sd.update(bn("norm", dims[-1]))
    sd.update({"head.weight": 0.1 * torch.randn(num_classes, dims[-1], generator=g), "head.bias": vec(num_classes)})
    return sd


# --- published geometry -----------------------------------------------------------------------------------

# (builder, frames, classes, params M, GFLOPs per 224^2 view): video paper / README tables; the image
# README rounds to 22M / 50M, the exact counts (21.5 / 49.8) are the research note's analytic ones.
PUBLISHED = [
    ("uniformer_s", 8, 400, 21.4, 17.5),
    ("uniformer_s", 16, 400, 21.4, 41.8),
    ("uniformer_s", 32, 400, 21.4, 109.6),
    ("uniformer_b", 16, 400, 49.8, 96.7),
    ("uniformer_s", 1, 1000, 21.5, 3.6),
    ("uniformer_b", 1, 1000, 49.8, 8.3),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,frames,classes,params,gflops", PUBLISHED, ids=[f"{p[0]}-{p[1]}f" for p in PUBLISHED])
def test_params_and_flops_match_published(name, frames, classes, params, gflops):
    model = vidformer.create_model(name, num_classes=classes, num_frames=frames)
    report = model_flops(model, frames, 224)
    assert report.params_m == pytest.approx(params, rel=0.02)
    assert report.gflops == pytest.approx(gflops, rel=0.02)


def test_video_geometry_downsamples_time_once_in_the_stem():
    model = tiny(16)
    assert model.patch_embed1.proj.kernel_size == (3, 4, 4) and model.patch_embed1.proj.stride == (2, 4, 4)
    assert all(getattr(model, f"patch_embed{i}").proj.stride == (1, 2, 2) for i in (2, 3, 4))
    assert model.blocks1[0].pos_embed.kernel_size == (3, 3, 3)
    assert model.blocks2[0].attn.kernel_size == (5, 5, 5)
    grid = model.patch_embed4(model.patch_embed3(model.patch_embed2(model.patch_embed1(torch.zeros(1, 3, 16, 64, 64)))))
    assert grid.shape == (1, 64, 8, 2, 2)


def test_image_model_has_2d_weights_and_imagenet_cfg():
    model = tiny(1)
    assert model.patch_embed1.proj.weight.shape == (16, 3, 4, 4)
    assert model.blocks2[0].attn.weight.shape == (32, 1, 5, 5)
    assert model.pretrained_cfg.mean == (0.485, 0.456, 0.406) and model.pretrained_cfg.num_frames == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- image <-> video equivalence after inflation -------------------------------------------------------------


@pytest.fixture
def image_model():
    torch.manual_seed(0)
    return randomize_norms(tiny(1)).eval()


def test_center_inflation_reproduces_the_image_model(image_model):
    video = tiny(4).eval()
    report = load_pretrained(video, image_model.state_dict(), inflate="center")
    assert report.missing == [] and report.unexpected == [] and report.mismatched == {}
    assert report.inflated["patch_embed1.proj.weight"] == "center, kt=3"
    assert report.inflated["blocks2.0.attn.weight"] == "center, kt=5"
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = image_model(frame)
        static = video(frame.unsqueeze(2).expand(-1, -1, 4, -1, -1))
        single = video(frame.unsqueeze(2))
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(static, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(single, expected, atol=1e-5, rtol=1e-4)


def test_average_inflation_spreads_the_kernel_over_time(image_model):
    video = tiny(4).eval()
    report = load_pretrained(video, image_model.state_dict(), inflate="average")
    assert report.inflated["blocks1.0.pos_embed.weight"] == "average, kt=3"
    w2d = image_model.blocks2[1].attn.weight
    torch.testing.assert_close(video.blocks2[1].attn.weight, w2d.unsqueeze(2).expand(-1, -1, 5, -1, -1) / 5)
    # 1x1 convs and attention linears are copied as they are
    torch.testing.assert_close(video.blocks1[0].conv1.weight, image_model.blocks1[0].conv1.weight)
    torch.testing.assert_close(video.blocks3[0].attn.qkv.weight, image_model.blocks3[0].attn.qkv.weight)


# --- official checkpoint layouts --------------------------------------------------------------------------------


def test_official_image_checkpoint_loads_unchanged(tmp_path):
    sd = official_state_dict(TINY["depths"], TINY["dims"], 1000, video=False)
    path = tmp_path / "uniformer_small_in1k.pth"
    torch.save({"model": sd, "epoch": 299, "max_accuracy": 82.9}, path)
    model = tiny(1, num_classes=1000)
    report = load_pretrained(model, str(path), strict=True)
    assert report.missing == [] and report.unexpected == [] and report.inflated == {} and report.dropped == {}
    assert report.found_in == "['model']"
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_official_video_checkpoint_loads_into_the_video_model(tmp_path):
    sd = official_state_dict(TINY["depths"], TINY["dims"], 400, video=True)
    path = tmp_path / "uniformer_small_k400_16x4.pth"
    torch.save({"model_state": sd, "epoch": 110, "cfg": "UNIFORMER:\n  DEPTH: [1, 2, 1, 1]\n"}, path)
    model = tiny(16, num_classes=400)
    report = load_pretrained(model, str(path), strict=True)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == {}
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["blocks2.1.attn.weight"], sd["blocks2.1.attn.weight"])  # 5x5x5 as is
    # 1x1x1 and 1x2x2 kernels lose their unit temporal axis
    torch.testing.assert_close(loaded["blocks1.0.mlp.fc1.weight"], sd["blocks1.0.mlp.fc1.weight"][:, :, 0])
    torch.testing.assert_close(loaded["patch_embed3.proj.weight"], sd["patch_embed3.proj.weight"][:, :, 0])


@pytest.mark.parametrize("kind,num_frames,container", [("image", 1, "model"), ("video", 4, "model_state")])
def test_logits_match_the_official_model(kind, num_frames, container):
    with safe_open(FIXTURE, "pt") as f:
        meta = f.metadata()
        tensors = {k[len(kind) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(kind + ".")}
    x, expected = tensors.pop("input").float(), tensors.pop("logits")
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model = vidformer.create_model("uniformer_s", num_classes=int(meta["num_classes"]), num_frames=num_frames,
                                   img_size=32, depths=ast.literal_eval(meta["depths"]),
                                   dims=ast.literal_eval(meta["dims"]), head_dim=int(meta["head_dim"])).eval()
    report = load_pretrained(model, {container: state}, strict=True)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == {}
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


def test_official_video_layout_converter_drops_unit_time_axes():
    sd = official_state_dict(TINY["depths"], TINY["dims"], 400, video=True)
    layouts = {layout.name: layout for layout in vidformer.models.uniformer.UniFormer.checkpoint_layouts}
    assert layouts["uniformer_official_video"].detect(sd) and not layouts["uniformer_official_image"].detect(sd)
    model = tiny(16, num_classes=400)
    result = model.load_state_dict(layouts["uniformer_official_video"].convert(sd, model), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_official_image_checkpoint_inflates_into_video_and_drops_other_head():
    sd = official_state_dict(TINY["depths"], TINY["dims"], 1000, video=False)
    model = tiny(16, num_classes=400)
    report = load_pretrained(model, {"model": sd}, inflate="average")
    assert report.missing == [] and report.unexpected == [] and report.mismatched == {}
    assert set(report.dropped) == {"head.weight", "head.bias"}
    # the stem, every DPE and every local MHRA kernel gain a time axis; nothing else
    assert len(report.inflated) == 1 + sum(TINY["depths"]) + TINY["depths"][0] + TINY["depths"][1]


def test_layer_scale_checkpoint_is_refused_by_name():
    sd = official_state_dict(TINY["depths"], TINY["dims"], 1000, video=False)
    sd["blocks3.0.gamma_1"] = torch.ones(32)
    with pytest.raises(UsageError, match="layer scale"):
        load_pretrained(tiny(1, num_classes=1000), {"model": sd})


# --- inference fusions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [1, 4])
def test_fusion_folds_every_block_batchnorm_and_keeps_the_logits(num_frames):
    torch.manual_seed(0)
    model = randomize_norms(tiny(num_frames)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eps = 0.1  # large enough that a fold forgetting eps changes the logits
    x = torch.randn(2, 3, num_frames, 32, 32)
    with torch.no_grad():
        expected = model(x)
        fuse_for_inference(model)
        fused = model(x)
        again = fuse_for_inference(model)(x)
    assert expected.abs().max() > 0.1
    # only the final norm stays: the pre-logits features are taken after it
    assert [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm3d)] == ["norm"]
    assert all(isinstance(b.norm1, torch.nn.Identity) and isinstance(b.norm2, torch.nn.Identity)
               for b in (*model.blocks1, *model.blocks2))
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    torch.testing.assert_close(again, fused, rtol=0, atol=0)  # a second call changes nothing


# --- training switches ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grad_checkpointing_gives_the_same_gradients_and_batchnorm_statistics():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 32, 32)

    def step(checkpointing):
        torch.manual_seed(0)
        model = tiny(2, drop_path_rate=0.0).train()
        model.set_grad_checkpointing(checkpointing)
        model(x).square().sum().backward()
        return [p.grad for p in model.parameters()], model.state_dict()

    plain_grads, plain_state = step(False)
    ckpt_grads, ckpt_state = step(True)
    for a, b in zip(plain_grads, ckpt_grads):
        torch.testing.assert_close(a, b)
    assert plain_state["blocks1.0.norm1.num_batches_tracked"] == 1
    for key in ("blocks1.0.norm1.running_mean", "blocks2.1.norm2.running_var", "blocks1.0.norm2.num_batches_tracked"):
        torch.testing.assert_close(ckpt_state[key], plain_state[key])


def test_stochastic_depth_rises_linearly_to_the_rate():
    model = tiny(4, drop_path_rate=0.2)
    rates = [b.drop_path.p for i in (1, 2, 3, 4) for b in getattr(model, f"blocks{i}")]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    model.train()
    x = torch.randn(4, 3, 2, 32, 32)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_sync_batchnorm_conversion_keeps_eval_outputs_and_trains():
    torch.manual_seed(0)
    model = randomize_norms(tiny(2)).eval()
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        expected = model(x)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == 2 * 3 + 1
    assert not any(type(m) is torch.nn.BatchNorm3d for m in synced.modules())
    with torch.no_grad():
        torch.testing.assert_close(synced(x), expected)
    synced.train()
    synced(x).sum().backward()  # without a process group SyncBatchNorm runs as plain BatchNorm
    assert synced.blocks1[0].norm1.weight.grad is not None


def test_unknown_override_names_the_option():
    with pytest.raises(UsageError, match="embed_dim"):
        vidformer.create_model("uniformer_s", embed_dim=32)
