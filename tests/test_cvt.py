"""CvT: parity with HuggingFace transformers, official checkpoint keys, image/video equivalence, published
geometry, and the training switches (grad checkpointing, SyncBatchNorm, stochastic depth).

The official microsoft/CvT checkpoints are stood in for by a synthetic state dict keyed and shaped as
`lib/models/cls_cvt.py` saves them (`official_state_dict` below); HF parity uses the installed
transformers' `CvtForImageClassification` with random weights.
"""

import pytest
import torch

import vidformer
from vidformer.checkpoint import load_pretrained
from vidformer.errors import UsageError
from vidformer.flops import model_flops
from vidformer.models.cvt import ConvProjection, QuickGELU

TINY = dict(embed_dims=(16, 24, 32), depths=(1, 1, 2), num_heads=(1, 2, 2))


def tiny(num_frames, num_classes=10, **kw):
    return vidformer.create_model("cvt_13", num_classes=num_classes, num_frames=num_frames, img_size=32,
                                  **{**TINY, **kw})


def randomize_norms(model):
    """Non-trivial BatchNorm statistics and norm affines, so equivalence tests can fail."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
    return model


def official_state_dict(dims, depths, num_classes, mlp_ratio=4):
    """Random tensors under microsoft/CvT's keys and shapes (ConvolutionalVisionTransformer, image model)."""
    g = torch.Generator().manual_seed(2)

    def t(*shape):
        return 0.1 * torch.randn(shape, generator=g)

    sd = {}
    ins = (3,) + tuple(dims[:-1])
    for s, (d, depth) in enumerate(zip(dims, depths)):
        k = 7 if s == 0 else 3
        sd.update({f"stage{s}.patch_embed.proj.weight": t(d, ins[s], k, k), f"stage{s}.patch_embed.proj.bias": t(d),
                   f"stage{s}.patch_embed.norm.weight": 1 + t(d), f"stage{s}.patch_embed.norm.bias": t(d)})
        for j in range(depth):
            b = f"stage{s}.blocks.{j}"
            for n in ("norm1", "norm2"):
                sd.update({f"{b}.{n}.weight": 1 + t(d), f"{b}.{n}.bias": t(d)})
            for x in "qkv":
                c = f"{b}.attn.conv_proj_{x}"
                sd.update({f"{c}.conv.weight": t(d, 1, 3, 3), f"{c}.bn.weight": 1 + t(d), f"{c}.bn.bias": t(d),
                           f"{c}.bn.running_mean": t(d), f"{c}.bn.running_var": 1 + torch.rand(d, generator=g),
                           f"{c}.bn.num_batches_tracked": torch.tensor(3)})
                sd.update({f"{b}.attn.proj_{x}.weight": t(d, d), f"{b}.attn.proj_{x}.bias": t(d)})
            sd.update({f"{b}.attn.proj.weight": t(d, d), f"{b}.attn.proj.bias": t(d),
                       f"{b}.mlp.fc1.weight": t(mlp_ratio * d, d), f"{b}.mlp.fc1.bias": t(mlp_ratio * d),
                       f"{b}.mlp.fc2.weight": t(d, mlp_ratio * d), f"{b}.mlp.fc2.bias": t(d)})
    sd[f"stage{len(dims) - 1}.cls_token"] = t(1, 1, dims[-1])
    sd.update({"norm.weight": 1 + t(dims[-1]), "norm.bias": t(dims[-1]),
               "head.weight": t(num_classes, dims[-1]), "head.bias": t(num_classes)})
    return sd


@pytest.mark.slow
def test_huggingface_parity_at_t1():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref = transformers.CvtForImageClassification(transformers.CvtConfig(num_labels=10)).eval()  # CvT-13
    randomize_norms(ref)
    model = vidformer.create_model("cvt_13", num_classes=10, num_frames=1, img_size=64).eval()
    report = load_pretrained(model, ref.state_dict(), strict=True)
    assert report.layout == "cvt_huggingface" and not report.problems
    assert isinstance(model.stages[2].blocks[0].mlp.act, torch.nn.GELU)  # the HF port's activation
    assert model.pretrained_cfg.extra == {"options": {"act": "gelu", "attn_scale": "embed_dim"}}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = ref(x).logits, model(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_official_layout_loads_every_key_and_sets_quickgelu():
    dims, depths = TINY["embed_dims"], TINY["depths"]
    sd = official_state_dict(dims, depths, num_classes=10)
    model = tiny(1, act="gelu").eval()
    report = load_pretrained(model, sd, strict=True)
    assert report.layout == "cvt_official" and not report.problems
    assert len(report.loaded) == len(sd) == len(model.state_dict())
    assert torch.equal(model.stages[2].cls_token, sd["stage2.cls_token"])
    assert torch.equal(model.stages[1].blocks[0].attn.conv_proj_k.bn.running_var,
                       sd["stage1.blocks.0.attn.conv_proj_k.bn.running_var"])
    assert all(isinstance(b.mlp.act, QuickGELU) for s in model.stages for b in s.blocks)


def test_bad_options_name_what_is_allowed():
    with pytest.raises(UsageError, match="quick_gelu"):
        tiny(1, act="relu")
    with pytest.raises(UsageError, match="3 stages"):
        tiny(1, depths=(1, 1))


def test_quick_gelu_and_attention_scale_are_the_official_quirks():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    assert torch.allclose(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    # its value and gradient from the input (the shared Mlp's training path) against autograd's
    grad = torch.linspace(1, 2, 7, dtype=torch.float64)
    ref_grad, = torch.autograd.grad(QuickGELU()(x.requires_grad_()), x, grad)
    value, x_grad = QuickGELU.value_and_grad(x.detach(), grad)
    assert torch.allclose(value, x * torch.sigmoid(1.702 * x)) and torch.allclose(x_grad, ref_grad)
    attn = tiny(1).stages[2].blocks[0].attn
    assert attn.scale == pytest.approx(32 ** -0.5)  # full width C=32, not head width 16
    attn.set_scale("head_dim")
    assert attn.scale == pytest.approx(16 ** -0.5)


def test_image_model_has_2d_weights_and_video_model_3d():
    image, video = tiny(1), tiny(8)
    assert image.stages[0].patch_embed.proj.weight.shape == (16, 3, 7, 7)
    assert image.stages[1].blocks[0].attn.conv_proj_q.conv.weight.shape == (24, 1, 3, 3)
    assert video.stages[0].patch_embed.proj.weight.shape == (16, 3, 3, 7, 7)
    assert video.stages[1].blocks[0].attn.conv_proj_q.conv.weight.shape == (24, 1, 3, 3, 3)
    assert set(image.state_dict()) == set(video.state_dict())


@pytest.mark.parametrize("kv_stride_t", [1, 2])
def test_static_clip_gives_image_logits_after_center_inflation(kv_stride_t):
    torch.manual_seed(0)
    image = randomize_norms(tiny(1)).eval()
    video = tiny(8, kv_stride_t=kv_stride_t).eval()
    report = load_pretrained(video, image.state_dict(), inflate="center", strict=True)
    assert "stages.0.patch_embed.proj.weight" in report.inflated and not report.problems
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = image(frame)
        got = video(frame.unsqueeze(2).expand(-1, -1, 8, -1, -1))
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


def test_cls_frame_bias_is_what_makes_static_clips_exact():
    torch.manual_seed(0)
    image = randomize_norms(tiny(1)).eval()
    video = tiny(8, cls_frame_bias=False).eval()
    load_pretrained(video, image.state_dict(), inflate="center")
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        diff = (video(frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)) - image(frame)).abs().max()
    assert diff > 1e-3  # without it the cls key weighs 1/T' of a spatial key


def test_kv_temporal_stride_shortens_keys_and_values():
    grids = {}

    def record(name):
        def hook(module, inputs, out):
            grids[name] = out[1]  # (T', H', W') of the projected grid
        return hook

    model = tiny(8, kv_stride_t=2).eval()
    attn = model.stages[0].blocks[0].attn
    attn.conv_proj_q.register_forward_hook(record("q"))
    attn.conv_proj_k.register_forward_hook(record("k"))
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 32, 32))
    assert grids["q"] == (4, 8, 8)  # stem: time / 2, space / 4
    assert grids["k"] == (2, 4, 4)


def test_video_forward_backward_and_stochastic_depth_in_last_stage_only():
    model = tiny(4, drop_path_rate=0.2)
    assert [b.drop_path.p for s in model.stages for b in s.blocks] == [0.0, 0.0, 0.0, 0.2]
    logits = model(torch.randn(2, 3, 4, 32, 32))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.no_weight_decay() == {"stages.2.cls_token"}
    assert model.no_weight_decay() <= dict(model.named_parameters()).keys()


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = tiny(4)
    x = torch.randn(2, 3, 4, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_sync_batchnorm_conversion_keeps_keys_and_outputs():
    torch.manual_seed(0)
    model = randomize_norms(tiny(4)).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        before = model(x)
    keys = set(model.state_dict())
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    norms = [m for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 3 * 4 and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    assert set(synced.state_dict()) == keys
    with torch.no_grad():
        assert torch.allclose(synced(x), before, atol=1e-6)
    synced.train()
    synced(x).sum().backward()  # without a process group SyncBatchNorm runs plain batch norm
    assert norms[0].weight.grad is not None


@pytest.mark.slow
@pytest.mark.parametrize("name,params_m,gflops", [("cvt_13", 20.0, 4.5), ("cvt_21", 32.0, 7.1)])
def test_published_params_and_flops_at_224(name, params_m, gflops):
    model = vidformer.create_model(name, num_classes=1000, num_frames=1, img_size=224)
    report = model_flops(model, num_frames=1, img_size=224)
    assert report.params_m == pytest.approx(params_m, rel=0.02)
    assert report.gflops == pytest.approx(gflops, rel=0.02)


def test_conv_projection_is_depthwise_without_bias():
    proj = ConvProjection(8, (3, 3, 3), (2, 2, 2))
    assert proj.conv.groups == 8 and proj.conv.bias is None and proj.conv.padding == (1, 1, 1)
    tokens, thw = proj(torch.randn(1, 8, 4, 6, 6))
    assert thw == (2, 3, 3) and tokens.shape == (1, 18, 8)
