"""PoolFormer / MetaFormer: timm parity, the official layout, published geometry, inflation, token mixers."""

import re

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.metaformer import MetaFormer, checkpoint_filter_fn
from timm.layers import GroupNorm1 as TimmGroupNorm1

from vidformer.checkpoint import load_pretrained
from vidformer.errors import UsageError
from vidformer.flops import model_flops
from vidformer.models import create_model
from vidformer.layers import fuse_for_inference
from vidformer.models.poolformer import GlobalAttention, Pooling

TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), attn_head_dim=8)


def _randomise_scales_and_norms(model: torch.nn.Module) -> None:
    """Random weights make layer scales 1e-5 (blocks ~ identity); give every branch a real say in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_scale" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") and "norm" in name else 0.0))


def _assert_close_logits(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert (ours - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


def _tiny_timm_poolformer(num_classes=5):
    """timm's poolformer_* v1 recipe (the arguments of timm's poolformer_s12 builder) at tiny width."""
    return MetaFormer(depths=TINY["depths"], dims=TINY["dims"], downsample_norm=None, mlp_act=torch.nn.GELU,
                      mlp_bias=True, norm_layers=TimmGroupNorm1, layer_scale_init_values=1e-5,
                      res_scale_init_values=None, use_mlp_head=False, num_classes=num_classes)


# official sail-sg/poolformer key -> timm key is timm's checkpoint_filter_fn; this is its inverse for v1
_TIMM_TO_OFFICIAL = [
    (r"^stem\.conv\.", "patch_embed.proj."),
    (r"^stages\.(\d)\.downsample\.conv\.", lambda m: f"network.{2 * int(m[1]) - 1}.proj."),
    (r"^stages\.(\d)\.blocks\.", lambda m: f"network.{2 * int(m[1])}."),
    (r"layer_scale(\d)\.scale$", r"layer_scale_\1"),
    (r"^head\.norm\.", "norm."),
    (r"^head\.fc\.", "head."),
]


def _official_state_dict(timm_sd):
    out = {}
    for key, value in timm_sd.items():
        for pattern, repl in _TIMM_TO_OFFICIAL:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["poolformer_s12", "poolformer_m36"])
def test_timm_weights_give_timm_logits(name):
    torch.manual_seed(0)
    ref = timm.create_model(name, num_classes=10).eval()
    _randomise_scales_and_norms(ref)
    model = create_model(name, num_frames=1, num_classes=10).eval()
    report = load_pretrained(model, ref.state_dict(), strict=True)
    assert report.layout == "timm_poolformer" and model.head_norm == "post_pool"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close_logits(model(x), ref(x))


def test_official_layout_loads_and_uses_the_official_head():
    torch.manual_seed(0)
    ref = _tiny_timm_poolformer().eval()
    _randomise_scales_and_norms(ref)
    official = _official_state_dict(ref.state_dict())
    assert "network.1.proj.weight" in official and "network.6.0.layer_scale_2" in official
    # timm reads this layout back to its own keys: the inverse above is the official layout timm knows
    assert checkpoint_filter_fn(official, ref).keys() == ref.state_dict().keys()

    model = create_model("poolformer_s12", num_frames=1, num_classes=5, **TINY).eval()
    model.set_head_norm("post_pool")
    report = load_pretrained(model, official, strict=True)
    assert report.layout == "poolformer_official" and model.head_norm == "pre_pool"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        grid = ref.forward_features(x)  # (B, C, 2, 2)
        # the original head: GroupNorm-1 on the map, then the mean (timm pools first, then LayerNorm)
        feats = F.group_norm(grid, 1, ref.head.norm.weight, ref.head.norm.bias, 1e-5).mean((2, 3))
        _assert_close_logits(model(x), ref.head.fc(feats))
        official_order = model(x)
        model.set_head_norm("post_pool")
        _assert_close_logits(model(x), ref(x))
        assert (model(x) - official_order).abs().max() > 1e-2  # the two heads are different functions



def test_timm_file_loads_into_a_model_moved_to_double(tmp_path):
    """Switching the head order on load builds the new norm where the model lives (no "mixed dtype")."""
    torch.manual_seed(0)
    ref = _tiny_timm_poolformer().eval()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    model = create_model("poolformer_s12", num_frames=1, num_classes=5, **TINY).double().eval()
    assert model.head_norm == "pre_pool"
    report = load_pretrained(model, str(tmp_path / "timm.pth"), strict=True)
    assert report.layout == "timm_poolformer" and model.head_norm == "post_pool"
    assert model.norm.weight.dtype == torch.float64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close_logits(model(x.double()).float(), ref(x))

PAPER = {  # PoolFormer paper Table 1 / sail-sg/poolformer README: params (M), MACs (G) at 224
    "poolformer_s12": (11.9, 1.8), "poolformer_s24": (21.4, 3.4), "poolformer_s36": (30.9, 5.0),
    "poolformer_m36": (56.2, 8.8), "poolformer_m48": (73.5, 11.6),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER))
def test_imagenet_params_and_flops_match_the_paper(name):
    params, gflops = PAPER[name]
    report = model_flops(create_model(name, num_frames=1, num_classes=1000), num_frames=1, img_size=224)
    assert report.params_m == pytest.approx(params, rel=0.02)
    assert report.gflops == pytest.approx(gflops, rel=0.02)


@pytest.mark.slow
def test_video_cost_per_view_at_16_frames():
    # stem 3x7x7 with temporal stride 2: 8 of the 16 frames remain; blocks and downsamples cost 8x the image,
    # the stem 3 (kernel) x 8 (frames) times the image stem's 0.236 GFLOPs
    report = model_flops(create_model("poolformer_s12", num_classes=400), num_frames=16, img_size=224)
    image_stem = 64 * 3 * 7 * 7 * 56 * 56 / 1e9
    image_rest = 1.8227 - image_stem
    assert report.gflops == pytest.approx(8 * image_rest + 24 * image_stem, rel=0.01)
    assert report.params_m == pytest.approx(11.9 - 1000 * 512 / 1e6 + 400 * 512 / 1e6 + 2 * 64 * 3 * 49 / 1e6, rel=0.01)


def test_image_model_has_checkpoint_shapes_and_video_model_inflates_only_patch_convs():
    with torch.device("meta"):  # shapes only
        image = create_model("poolformer_s12", num_frames=1, num_classes=1000).state_dict()
        video = create_model("poolformer_s12", num_frames=16, num_classes=1000).state_dict()
    assert image["stem.proj.weight"].shape == (64, 3, 7, 7)
    assert image["stages.1.downsample.proj.weight"].shape == (128, 64, 3, 3)
    assert image["stages.0.blocks.0.mlp.fc1.weight"].shape == (256, 64, 1, 1)
    assert video["stem.proj.weight"].shape == (64, 3, 3, 7, 7)
    assert [k for k in image if image[k].shape != video[k].shape] == ["stem.proj.weight"]


@pytest.mark.parametrize("mixers", ["pool", "dwconv", "hybrid"])
def test_static_video_gives_the_image_logits_after_center_inflation(mixers):
    torch.manual_seed(0)
    image = create_model("poolformer_s12", num_frames=1, num_classes=7, token_mixers=mixers, **TINY).eval()
    _randomise_scales_and_norms(image)
    video = create_model("poolformer_s12", num_frames=8, num_classes=7, token_mixers=mixers,
                         temporal_kernels=(3, 3, 1, 3), temporal_strides=(2, 1, 2, 1), **TINY).eval()
    report = load_pretrained(video, image.state_dict(), inflate="center", strict=True)
    assert "stem.proj.weight" in report.inflated and "stages.3.downsample.proj.weight" in report.inflated
    frame = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close_logits(video(frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)), image(frame))


def test_image_input_is_a_one_frame_clip():
    torch.manual_seed(0)
    model = create_model("poolformer_s12", num_frames=1, num_classes=3, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.unsqueeze(2)))


def test_temporal_strides_set_the_grid():
    model = create_model("poolformer_s12", num_frames=16, num_classes=3, temporal_strides=(2, 2, 1, 1), **TINY)
    grids = []
    model.norm.register_forward_hook(lambda m, inp, out: grids.append(tuple(inp[0].shape[2:])))
    model(torch.randn(1, 3, 16, 64, 64))
    assert grids == [(4, 2, 2)]


def test_pooling_averages_real_elements_only():
    pool = Pooling(3, 3)
    assert pool(torch.full((1, 2, 4, 5, 5), 3.0)).abs().max() == 0  # constant in, zero out, borders included
    x = torch.randn(1, 2, 2, 2, 2)  # smaller than the window: every window holds the whole grid
    assert torch.allclose(pool(x) + x, x.mean((2, 3, 4), keepdim=True).expand_as(x), atol=1e-6)
    x = torch.randn(2, 4, 1, 9, 9)  # T=1 meets exactly the 2-D pool
    ref = F.avg_pool2d(x[:, :, 0], 3, 1, 1, count_include_pad=False).unsqueeze(2)
    assert torch.allclose(pool(x) + x, ref, atol=1e-6)


def test_pooling_is_the_3d_average_on_channels_last_clips():
    pool = Pooling(3, 3)
    x = torch.randn(2, 4, 5, 6, 7).contiguous(memory_format=torch.channels_last_3d)
    ref = F.avg_pool3d(x, 3, 1, 1, count_include_pad=False)
    assert torch.allclose(pool(x) + x, ref, atol=1e-6)
    assert pool(x).is_contiguous(memory_format=torch.channels_last_3d)
    with pytest.raises(UsageError, match="odd"):
        Pooling(3, 2)


@pytest.mark.parametrize("num_frames, mixers", [(1, "pool"), (4, "pool"), (4, "hybrid")])
def test_fused_model_gives_the_same_logits(num_frames, mixers):
    torch.manual_seed(0)
    model = create_model("poolformer_s12", num_frames=num_frames, num_classes=5, token_mixers=mixers, **TINY)
    _randomise_scales_and_norms(model)  # non-trivial norm affines and layer scales: a wrong fold shows
    x = torch.randn(2, 3, num_frames, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
        fused = fuse_for_inference(model)
        _assert_close_logits(fused(x), ref)
    with_grad = fused(x.requires_grad_())  # eval with gradients (a saliency map, torch.jit.trace): the same
    _assert_close_logits(with_grad.detach(), ref)
    with_grad.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    keys = fused.state_dict().keys()
    assert not any(".norm2." in k or "layer_scale2" in k for k in keys)
    assert any(".norm1." in k for k in keys) == (mixers == "hybrid")  # attention blocks keep norm1
    with pytest.raises(UsageError, match="fused"):
        fused.train()


@pytest.mark.parametrize("mixers", ["pool", "identity", "dwconv", "attention", "hybrid",
                                    ("pool", "dwconv", "identity", "attention")])
def test_token_mixers_train_on_video(mixers):
    torch.manual_seed(0)
    model = create_model("poolformer_s12", num_frames=4, num_classes=3, token_mixers=mixers, **TINY)
    logits = model(torch.randn(2, 3, 4, 32, 32))
    assert logits.shape == (2, 3)
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_hybrid_pools_early_and_attends_late():
    model = create_model("poolformer_s12", num_frames=1, token_mixers="hybrid", **TINY)
    kinds = [type(stage.blocks[0].token_mixer) for stage in model.stages]
    assert kinds == [Pooling, Pooling, GlobalAttention, GlobalAttention]


@pytest.mark.parametrize("kwargs, match", [
    (dict(token_mixers="fourier"), "fourier"),
    (dict(token_mixers=("pool", "pool")), "token_mixers has 2 entries"),
    (dict(head_norm="layer"), "head_norm"),
    (dict(token_mixers="attention", attn_head_dim=12), "attn_head_dim 12"),
])
def test_bad_options_name_the_option(kwargs, match):
    with pytest.raises(UsageError, match=match):
        create_model("poolformer_s12", num_frames=1, **dict(TINY, **kwargs))


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = create_model("poolformer_s12", num_frames=4, num_classes=3, token_mixers="hybrid", drop_path_rate=0.0,
                         **TINY)
    x = torch.randn(2, 3, 4, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


@pytest.mark.parametrize("channels_last", [True, False])
def test_sample_variance_equals_torch_var_in_value_and_gradient(channels_last):
    """The pooling branch's per-sample variance (mean, then one batched dot of the centred sample) is torch.var's,
    also with a large mean, and stays float32 under bf16 autocast as torch.var does."""
    from vidformer.models.poolformer import _SampleVariance

    torch.manual_seed(0)
    x = torch.randn(3, 8, 2, 5, 6, dtype=torch.float64) * 3 + 100
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_()
    assert torch.autograd.gradcheck(_SampleVariance.apply, (x,))
    ref = torch.var(x, (1, 2, 3, 4), correction=0, keepdim=True)
    grad = torch.randn_like(ref)
    torch.testing.assert_close(_SampleVariance.apply(x), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(_SampleVariance.apply(x), x, grad)[0],
                               torch.autograd.grad(ref, x, grad)[0], rtol=1e-10, atol=1e-12)
    low = x.detach().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        variance = _SampleVariance.apply(low)
    assert variance.dtype == torch.float32
    torch.testing.assert_close(variance, ref.float(), rtol=1e-5, atol=0)
