"""MViTv2: rel-pos bias against the explicit formula, parity with torchvision and timm, inflation, geometry."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vidformer.layers import attention, tokens
from vidformer.models import mvitv2
from vidformer.models.mvitv2 import MViTv2, rel_pos_bias
from vidformer.models.registry import create_model

TINY = dict(depths=(1, 1, 2, 1), embed_dim=16, num_heads=1)


def _layout(name):
    return next(layout for layout in MViTv2.checkpoint_layouts if layout.name == name)


def _perturb_norms(model):
    """Random LayerNorm affines, so a converter that drops or swaps norms cannot pass."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)


def _rel_err(ref, out):
    return ((ref - out).abs().max() / ref.abs().max()).item()


def _explicit_offsets(q_len, k_len):
    """PySlowFast's offset index, computed in float64 with plain Python."""
    q_ratio, k_ratio = max(k_len / q_len, 1.0), max(q_len / k_len, 1.0)
    return torch.tensor([[math.floor(i * q_ratio - j * k_ratio + (k_len - 1) * k_ratio) for j in range(k_len)]
                         for i in range(q_len)])


@pytest.mark.parametrize("q_grid,k_grid,rows", [((2, 4, 4), (2, 2, 2), (7, 7, 3)), ((3, 6, 6), (3, 3, 3), (9, 9, 5)),
                                                ((2, 5, 5), (1, 2, 2), (9, 9, 3))])
@pytest.mark.parametrize("num_prefix", [0, 1])
def test_rel_pos_bias_equals_explicit_attention(q_grid, k_grid, rows, num_prefix):
    """softmax(QK^T/sqrt(d) + E)V with E[i, j] = q_i . (R_h + R_w + R_t)[offsets(i, j)] built pair by pair.

    The third case has non-integer size ratios and tables of the wrong length (interpolated).
    """
    torch.manual_seed(0)
    b, n, d = 2, 2, 8
    nq, nk = math.prod(q_grid), math.prod(k_grid)
    q = torch.randn(b, num_prefix + nq, n, d)
    k, v = torch.randn(b, n, num_prefix + nk, d), torch.randn(b, n, num_prefix + nk, d)
    tables = [torch.randn(r, d) for r in rows]  # h, w, t
    bias = rel_pos_bias(q, q_grid, k_grid, tables[0], tables[1], tables[2], num_prefix)

    resized = []
    for axis, table in zip((1, 2, 0), tables):
        want = 2 * max(q_grid[axis], k_grid[axis]) - 1
        resized.append(torch.nn.functional.interpolate(table.t()[None], size=want, mode="linear")[0].t())
    dh, dw, dt = (_explicit_offsets(q_grid[a], k_grid[a]) for a in (1, 2, 0))
    qt, qh, qw = torch.meshgrid(*(torch.arange(s) for s in q_grid), indexing="ij")
    kt, kh, kw = torch.meshgrid(*(torch.arange(s) for s in k_grid), indexing="ij")
    qt, qh, qw, kt, kh, kw = (a.flatten() for a in (qt, qh, qw, kt, kh, kw))
    pair = (resized[0][dh[qh[:, None], kh[None, :]]] + resized[1][dw[qw[:, None], kw[None, :]]]
            + resized[2][dt[qt[:, None], kt[None, :]]])  # (Nq, Nk, d)
    e = torch.zeros(b, n, num_prefix + nq, num_prefix + nk)
    e[:, :, num_prefix:, num_prefix:] = torch.einsum("bqnc,qkc->bnqk", q[:, num_prefix:], pair)
    assert torch.allclose(bias, e, atol=1e-5)

    qh_ = q.transpose(1, 2)
    explicit = torch.softmax(qh_ @ k.transpose(-1, -2) * d ** -0.5 + e, dim=-1) @ v
    assert torch.allclose(attention(qh_, k, v, bias), explicit, atol=1e-5)


def _torchvision_mvit_v2_s(num_frames, crop):
    """torchvision's mvit_v2_s architecture at another input size (its builder fixes 16 x 224)."""
    from torchvision.models.video import mvit
    ref = mvit.mvit_v2_s()
    settings = []
    for block in ref.blocks:
        attn = block.attn
        settings.append(mvit.MSBlockConfig(
            num_heads=attn.num_heads, input_channels=block.norm1.normalized_shape[0], output_channels=attn.output_dim,
            kernel_q=list(attn.pool_q.pool.kernel_size), kernel_kv=list(attn.pool_k.pool.kernel_size),
            stride_q=list(attn.pool_q.pool.stride), stride_kv=list(attn.pool_k.pool.stride)))
    return mvit.MViT(spatial_size=(crop, crop), temporal_size=num_frames, block_setting=settings, residual_pool=True,
                     residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
                     stochastic_depth_prob=0.2)


@pytest.mark.slow
@pytest.mark.parametrize("num_frames,crop", [(16, 224), (8, 160)])
def test_torchvision_mvit_v2_s_parity(num_frames, crop):
    torch.manual_seed(0)
    ref = _torchvision_mvit_v2_s(num_frames, crop).eval()
    _perturb_norms(ref)
    model = create_model("mvitv2_s", num_frames=num_frames, img_size=crop).eval()
    layout = _layout("torchvision")
    assert layout.detect(ref.state_dict())
    model.load_state_dict(layout.convert(ref.state_dict(), model), strict=True)
    x = torch.randn(1, 3, num_frames, crop, crop)
    with torch.no_grad():
        assert _rel_err(ref(x), model(x)) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("timm_name,name", [("mvitv2_tiny", "mvitv2_t"), ("mvitv2_small", "mvitv2_s")])
def test_timm_image_parity(timm_name, name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(timm_name, num_classes=10).eval()
    _perturb_norms(ref)
    model = create_model(name, num_frames=1, num_classes=10).eval()
    assert model.patch_embed.proj.weight.ndim == 4 and model.blocks[0].attn.rel_pos_t is None
    layout = _layout("timm")
    assert layout.detect(ref.state_dict())
    model.load_state_dict(layout.convert(ref.state_dict(), model), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert _rel_err(ref(x), model(x)) <= 1e-4


def test_timm_large_layout_matches_image_mvitv2_l():
    """Image MViTv2-L widens in the MLP (DIM_MUL_IN_ATT False); every converted timm key has our shape."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ref = timm.create_model("mvitv2_large", num_classes=1000)
        model = create_model("mvitv2_l", num_frames=1, img_size=224, num_classes=1000)
    converted = _layout("timm").convert(ref.state_dict(), model)
    ours = model.state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_pyslowfast_and_image_layouts():
    """A PySlowFast state dict names the classifier head.projection; the image one has 2-D kernels."""
    for num_frames, name in [(4, "pyslowfast"), (1, "mvit-image")]:
        torch.manual_seed(0)
        src = create_model("mvitv2_t", num_frames=num_frames, img_size=32, num_classes=7, **TINY).eval()
        sd = {k.replace("head.", "head.projection."): v for k, v in src.state_dict().items()}
        detected = [layout.name for layout in MViTv2.checkpoint_layouts if layout.detect(sd)]
        assert detected == [name]
        dst = create_model("mvitv2_t", num_frames=num_frames, img_size=32, num_classes=7, **TINY).eval()
        dst.load_state_dict(_layout(name).convert(sd, dst), strict=True)
        x = torch.randn(1, 3, num_frames, 32, 32)
        with torch.no_grad():
            assert torch.equal(src(x), dst(x))


def test_center_inflation_of_image_model_gives_image_logits_on_static_clip():
    from vidformer.checkpoint import load_pretrained
    torch.manual_seed(0)
    image = create_model("mvitv2_t", num_frames=1, img_size=64, num_classes=5, **TINY).eval()
    _perturb_norms(image)
    # same spatial geometry as the image model: its KV strides and mean pooling, no cls token
    video = create_model("mvitv2_t", num_frames=6, img_size=64, num_classes=5, kv_stride=(1, 4, 4), cls_token=False,
                         **TINY).eval()
    report = load_pretrained(video, image.state_dict(), inflate="center")
    assert "patch_embed.proj.weight" in report.inflated and "blocks.0.attn.pool_q.weight" in report.inflated
    assert "blocks.0.attn.rel_pos_t" in report.zeroed and not report.missing
    frame = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        static = video(frame.unsqueeze(2).expand(-1, -1, 6, -1, -1))
        assert _rel_err(image(frame), static) <= 1e-5


def test_table_sizes_follow_pyslowfast_floor_division():
    with torch.device("meta"):
        s = create_model("mvitv2_s", num_frames=16, img_size=224)
        large = create_model("mvitv2_l", num_frames=40, img_size=312)
    rows = [blk.attn.rel_pos_h.shape[0] for blk in s.blocks]
    assert rows == [111, 55, 55] + [27] * 12 + [13]
    assert {blk.attn.rel_pos_t.shape[0] for blk in s.blocks} == {15}
    assert s.blocks[0].attn.rel_pos_h.shape[1] == 96 and s.blocks[-1].attn.rel_pos_h.shape[1] == 96
    # at 312 the grid is 78 -> 39 -> 19 -> 9 by floor division (at run time 78 -> 39 -> 20 -> 10)
    large_rows = [large.blocks[i].attn.rel_pos_h.shape[0] for i in (0, 2, 8, 44, 45)]
    assert large_rows == [155, 77, 37, 37, 17]
    assert large.blocks[0].attn.rel_pos_t.shape[0] == 39
    kv = [cfg.stride_kv for cfg in s.block_cfgs]
    assert kv[0] == (1, 8, 8) and kv[1] == (1, 4, 4) and kv[3] == (1, 2, 2) and kv[14] == (1, 1, 1)


def test_any_clip_size_runs_and_image_input_is_one_frame():
    torch.manual_seed(0)
    model = create_model("mvitv2_s", num_frames=8, img_size=64, num_classes=3, **TINY).eval()
    with torch.no_grad():
        for shape in [(1, 3, 8, 64, 64), (2, 3, 5, 48, 80), (1, 3, 64, 64)]:
            out = model(torch.randn(*shape))
            assert out.shape == (shape[0], 3) and torch.isfinite(out).all()


def test_training_step_with_drop_path_and_grad_checkpointing_matches():
    torch.manual_seed(0)
    # mean pooling: with the cls readout the last block's query path would get no gradient at all
    model = create_model("mvitv2_s", num_frames=4, img_size=64, num_classes=3, drop_path_rate=0.0, mean_pooling=True,
                         **TINY)
    x = torch.randn(2, 3, 4, 64, 64)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(ckpt)
        torch.manual_seed(1)
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in grads[0])

    stochastic = create_model("mvitv2_s", num_frames=4, img_size=64, num_classes=3, drop_path_rate=0.5, **TINY)
    assert stochastic.blocks[-1].drop_path.p == 0.5 and stochastic.blocks[0].drop_path.p == 0.0
    stochastic.train()
    torch.manual_seed(0)
    first = stochastic(x)
    torch.manual_seed(1)
    assert not torch.allclose(first, stochastic(x))


@pytest.mark.slow
@pytest.mark.parametrize("name,num_frames,params_m,gflops", [
    ("mvitv2_t", 1, 24.0, 4.7), ("mvitv2_s", 1, 35.0, 7.0), ("mvitv2_b", 1, 52.0, 10.2),
    ("mvitv2_s", 16, 34.5, 64.0), ("mvitv2_b", 32, 51.2, 225.0),
])
def test_published_params_and_flops(name, num_frames, params_m, gflops):
    from vidformer.flops import model_flops
    model = create_model(name, num_frames=num_frames, num_classes=1000 if num_frames == 1 else 400)
    report = model_flops(model, num_frames=num_frames, img_size=224)
    assert report.params_m == pytest.approx(params_m, rel=0.02)
    assert report.gflops == pytest.approx(gflops, rel=0.02)


def test_kv_pooling_over_the_rows_it_reads_equals_pooling_over_all():
    # where stride >= kernel, K and V are projected only at the rows the pooling windows read, then pooled at
    # stride = kernel (MultiScaleAttention._kv_input): the same windows, for every size, kernel and padding
    from vidformer.models.mvitv2 import _read_rows

    torch.manual_seed(0)
    gathered = 0
    for n, kernel, stride in itertools.product(range(1, 20), (1, 2, 3, 5), range(1, 10)):
        for padding in range(kernel):
            if n + 2 * padding < kernel:
                continue
            x, w = torch.randn(1, 1, n), torch.randn(1, 1, kernel)
            rows = _read_rows(n, kernel, stride, padding)
            if rows is None:  # overlapping windows, or every row read
                continue
            gathered += 1
            ref = F.conv1d(x, w, None, stride, padding)
            out = F.conv1d(x[..., rows], w, None, kernel, padding)
            assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6), (n, kernel, stride, padding)
    assert gathered > 500
    # mvitv2_s's first two stages at 16x224: a 56-wide axis pooled at stride 8 reads 20 rows, at 4 reads 41
    assert len(_read_rows(56, 3, 8, 1)) == 20 and len(_read_rows(56, 3, 4, 1)) == 41 and _read_rows(28, 3, 2, 1) is None


@pytest.mark.parametrize("stride_q, stride_kv", [((1, 1, 1), (1, 2, 2)), ((2, 2, 2), (1, 4, 4)), ((1, 1, 1), (4, 8, 8))])
def test_every_training_path_of_the_attention_gives_the_same_values_and_gradients(monkeypatch, stride_q, stride_kv):
    # the training pooling conv (heads in the batch axis / one conv2d per temporal tap) and the q, k, v
    # projections (one matmul / three, then K and V from the rows a strided pooling reads) are chosen by size;
    # each choice must be the same function, and equal the one channels-last conv3d that runs without gradients
    from vidformer.models import mvitv2
    from vidformer.models.mvitv2 import BlockCfg, MultiScaleAttention

    torch.manual_seed(0)
    grid = (4, 6, 6)
    cfg = BlockCfg(16, 16, 16, 2, (3, 3, 3), stride_q, stride_kv, grid, 0.0)
    attn = MultiScaleAttention(cfg)
    x = torch.randn(2, 1 + math.prod(grid), 16, requires_grad=True)
    results = []
    for per_head_max, split_min in [(10 ** 9, 10 ** 9), (0, 0), (10 ** 9, 0), (0, 10 ** 9)]:
        monkeypatch.setattr(mvitv2, "_PER_HEAD_MAX_NUMEL", per_head_max)
        monkeypatch.setattr(mvitv2, "_SPLIT_QKV_MIN_TOKENS", split_min)
        attn.zero_grad(), x.grad is not None and x.grad.zero_()
        out, out_grid = attn(x, grid)
        out.square().sum().backward()
        results.append((out.detach(), out_grid, x.grad.clone(), [p.grad.clone() for p in attn.parameters()]))
    first = results[0]
    with torch.no_grad():
        no_grad_out, _ = attn(x, grid)
    assert (no_grad_out - first[0]).abs().max() <= 1e-5 * first[0].abs().max()
    for other in results[1:]:
        assert other[1] == first[1]
        for ref, out in [(first[0], other[0]), (first[2], other[2]), *zip(first[3], other[3])]:
            # relative to the largest entry, or absolute where the true gradient is 0 (a key norm's bias)
            assert (ref - out).abs().max() <= 1e-5 * max(ref.abs().max().item(), 1.0)


@pytest.mark.parametrize("per_head_max", [0, 10 ** 9])  # one conv2d per temporal tap / heads in the batch axis
def test_cpu_bf16_training_pools_in_float32_with_the_float32_values(monkeypatch, per_head_max):
    """torch's CPU backward of a bf16 depthwise conv is 5-25x slower than fp32's: under CPU autocast the pooling
    convs of a training step run in float32, forward and backward, and the block still returns bf16."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from vidformer.models.mvitv2 import BlockCfg, MultiScaleAttention

    class ConvDtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith("convolution"):
                self.seen.add((func.__name__.split(".")[0], args[0].dtype))
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(mvitv2, "_PER_HEAD_MAX_NUMEL", per_head_max)
    torch.manual_seed(0)
    grid = (4, 6, 6)
    attn = MultiScaleAttention(BlockCfg(16, 16, 16, 2, (3, 3, 3), (1, 2, 2), (1, 2, 2), grid, 0.0))
    x = torch.randn(2, 1 + math.prod(grid), 16, requires_grad=True)
    ref, _ = attn(x, grid)
    ref_grad, = torch.autograd.grad(ref.square().sum(), x)
    mode = ConvDtypes()
    with mode, torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attn(x, grid)
        grad, = torch.autograd.grad(out.float().square().sum(), x)
    assert out.dtype == torch.bfloat16 and mode.seen
    assert {dtype for _, dtype in mode.seen} == {torch.float32}, mode.seen  # forward and backward convolutions
    assert {name for name, _ in mode.seen} == {"convolution", "convolution_backward"}
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()
    assert (grad - ref_grad).abs().max() <= 0.05 * ref_grad.abs().max()


def test_size_constants_are_built_once_in_eager_and_equal_a_fresh_build():
    tokens._SIZE_CONSTANTS.clear()
    model = create_model("mvitv2_s", num_classes=3, num_frames=4, img_size=32, depths=(1, 1), embed_dim=16).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        first = model(x)
        cached = dict(tokens._SIZE_CONSTANTS)
        assert {key[0] for key in cached} == {mvitv2._offsets, mvitv2._key_onehots}
        assert torch.equal(model(x), first) and tokens._SIZE_CONSTANTS.keys() == cached.keys()
    for (build, sizes, device, dtype), value in cached.items():
        assert torch.equal(value, build(*sizes, like=torch.empty(0, device=device, dtype=dtype)))
