"""Foundation: config loading and errors, registry, shared layers, FLOPs counting, CLI."""

import importlib
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vidformer
from vidformer.cli import VERBS, build_parser, main
from vidformer.config import get_cfg
from vidformer.errors import ConfigError, UsageError
from vidformer.flops import count_flops, model_flops
from vidformer.layers import mlp as mlp_module
from vidformer.layers import (ConvMlp, CubePatchEmbed, DropPath, GroupNorm1, LayerNormChannels, Mlp, SpaceTimeConv, as_video,
                              attention, drop_path_rates, factored_bias_attention, to_grid, to_tokens)


# ---------------------------------------------------------------- config

def test_base_inheritance_then_file_then_command_line(tmp_path):
    (tmp_path / "base.yaml").write_text("DATA:\n  NUM_FRAMES: 8\n  SAMPLING_RATE: 8\nSOLVER:\n  BASE_LR: 0.1\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nDATA:\n  NUM_FRAMES: 32\n")
    cfg = get_cfg(str(tmp_path / "child.yaml"), ["SOLVER.BASE_LR", "0.5", "TRAIN.BATCH_SIZE", "3"])
    assert (cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE) == (32, 8)
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.TRAIN.BATCH_SIZE == 3
    assert cfg.is_frozen()


@pytest.mark.parametrize("text, overrides, message", [
    ("DATA:\n  NUM_FRAME: 8\n", [], "unknown key 'DATA.NUM_FRAME'"),
    ("{}\n", ["TRAIN.BATCHSIZE", "4"], "unknown key 'TRAIN.BATCHSIZE'"),
    ("{}\n", ["TRAIN.BATCH_SIZE", "'many'"], "TRAIN.BATCH_SIZE"),
    ("{}\n", ["TRAIN.BATCH_SIZE"], "KEY VALUE pairs"),
    ("{}\n", ["TRAIN.MIXED_PRECISION", "fp8"], "TRAIN.MIXED_PRECISION is 'fp8'; expected one of none, bf16, fp16"),
    ("DATA: [unclosed\n", [], "not valid YAML"),
    ("_BASE_: nowhere.yaml\n", [], "nowhere.yaml"),
])
def test_config_errors_name_the_key_or_file(tmp_path, text, overrides, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        get_cfg(str(path), overrides)
    assert message in str(e.value)


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="config file 'no/such.yaml' does not exist"):
        get_cfg("no/such.yaml")


# ---------------------------------------------------------------- registry

def test_registry_lists_and_builds():
    assert "toy_video" in vidformer.list_models("toy_*")
    model = vidformer.create_model("toy_video", num_classes=3, num_frames=2)
    assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)  # a 4-D input is a T=1 clip


def test_registry_errors_suggest_close_names():
    with pytest.raises(UsageError, match="unknown model 'toy_vdeo'; did you mean toy_video"):
        vidformer.create_model("toy_vdeo")
    with pytest.raises(UsageError, match="model 'toy_video': .*unexpected keyword argument 'widht'"):
        vidformer.create_model("toy_video", widht=3)
    with pytest.raises(UsageError, match="num_frames must be >= 1"):
        vidformer.create_model("toy_video", num_frames=0)


# ---------------------------------------------------------------- layers

@pytest.mark.parametrize("frames, kt", [(1, 1), (8, 3)])
def test_patch_embed_and_tokens_shapes(frames, kt):
    embed = CubePatchEmbed(3, 16, (kt, 7, 7), (min(kt, 2), 4, 4), (kt // 2, 3, 3), norm=LayerNormChannels(16))
    # the image geometry stores a 2-D weight: image checkpoints load without reshaping
    assert embed.proj.weight.ndim == (4 if kt == 1 else 5)
    x = embed(torch.randn(2, 3, frames, 32, 32))
    expected = embed.proj.output_size((frames, 32, 32))
    assert x.shape == (2, 16, *expected) and expected[1:] == (8, 8)
    tokens, thw = to_tokens(x)
    assert tokens.shape == (2, expected[0] * 64, 16) and thw == expected
    assert torch.equal(to_grid(tokens, thw), x)
    with pytest.raises(ValueError, match="do not fill a grid"):
        to_grid(tokens[:, 1:], thw)


def test_space_time_conv_with_kt1_equals_conv2d_per_frame():
    conv = SpaceTimeConv(4, 6, (1, 3, 3), (1, 2, 2), (0, 1, 1), groups=2)
    ref = nn.Conv2d(4, 6, 3, 2, 1, groups=2)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 3, 9, 9)
    per_frame = torch.stack([ref(x[:, :, t]) for t in range(3)], dim=2)
    assert torch.allclose(conv(x), per_frame, atol=1e-6)


def test_as_video_and_small_layers():
    assert as_video(torch.zeros(2, 3, 8, 8)).shape == (2, 3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        as_video(torch.zeros(3, 8, 8))
    x = torch.randn(2, 5, 3, 4, 4)
    assert torch.allclose(LayerNormChannels(5)(x), nn.functional.layer_norm(x.movedim(1, -1), (5,)).movedim(-1, 1),
                          atol=1e-6)
    gn = GroupNorm1(5)(x)
    assert torch.allclose(gn.mean(dim=(1, 2, 3, 4)), torch.zeros(2), atol=1e-5)
    assert Mlp(5, 20)(torch.randn(3, 5)).shape == (3, 5)
    assert drop_path_rates(0.2, 3) == [0.0, 0.1, 0.2]
    dp = DropPath(0.5).train()
    y = dp(torch.ones(1000, 4))
    assert set(y[:, 0].tolist()) <= {0.0, 2.0} and 0.3 < (y[:, 0] > 0).float().mean() < 0.7
    assert torch.equal(dp.eval()(x), x)


def test_attention_matches_explicit_softmax_with_bias():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    bias = torch.randn(2, 3, 5, 7)
    ref = torch.softmax(q @ k.transpose(-1, -2) * 0.5 + bias, dim=-1) @ v
    assert torch.allclose(attention(q, k, v, bias), ref, atol=1e-5)


@pytest.mark.parametrize("d,extra", [(8, 5), (8, 8), (12, 9)])  # widths 13 and 21 are padded, 16 is not
def test_factored_bias_attention_equals_attention_with_the_explicit_bias(d, extra):
    """softmax(q k^T / sqrt(d) + T K^T) v, values and gradients, whether or not the augmented width is padded."""
    assert importlib.import_module("vidformer.layers.attention")._AUG_WIDTH_MULTIPLE == 16  # as the widths assume
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, d, requires_grad=True) for n in (11, 7, 7))
    terms = torch.randn(2, 3, 11, extra, requires_grad=True)
    keys = torch.randn(7, extra)
    out = factored_bias_attention(q, k, v, terms, keys)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v, terms)]
    rq, rk, rv, rt = ref_inputs
    ref = torch.softmax(rq @ rk.transpose(-1, -2) * d ** -0.5 + rt @ keys.t(), dim=-1) @ rv
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    for mine, theirs in zip((q, k, v, terms), ref_inputs):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = factored_bias_attention(q, k, v, terms, keys)
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), ref, atol=0.1)


# ---------------------------------------------------------------- FLOPs

class ConvLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, (3, 3, 3), padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3, 4)))


def test_flops_match_a_hand_count():
    x = torch.zeros(1, 3, 4, 6, 6)
    # conv: one multiply-add per output element per kernel tap; linear: in x out
    by_hand = 8 * (4 * 6 * 6) * (3 * 27) + 8 * 10
    assert count_flops(ConvLinear(), x) * 1e9 == pytest.approx(by_hand)


def test_flops_count_fused_attention_like_explicit_matmuls():
    class Attn(nn.Module):
        def __init__(self, explicit):
            super().__init__()
            self.explicit, self.lin = explicit, nn.Linear(4, 4)

        def forward(self, x):
            q = self.lin(x).reshape(1, 2, 9, 4)
            if self.explicit:
                return torch.softmax(q @ q.transpose(-1, -2), -1) @ q
            return attention(q, q, q)

    x = torch.zeros(18, 4)
    assert count_flops(Attn(True), x) == pytest.approx(count_flops(Attn(False), x))


def test_model_flops_reports_params_and_input():
    report = model_flops(vidformer.create_model("toy_video", num_frames=4), 4, 32)
    assert report.input_shape == (1, 3, 4, 32, 32) and report.gflops > 0
    assert "1 multiply-add = 1 FLOP" in str(report)


# ---------------------------------------------------------------- CLI

def test_help_lists_only_working_verbs(capsys):
    assert main([]) == 2
    text = capsys.readouterr().out
    for verb in VERBS:
        assert verb in text
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(VERBS)


def test_cli_flops_on_a_registered_model(capsys):
    assert main(["flops", "toy_video", "--num-frames", "4", "--img-size", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "toy_video" and out["input_shape"] == [1, 3, 4, 32, 32] and out["gflops"] > 0
    assert main(["flops", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def test_an_empty_config_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="is empty or not a mapping"):
        get_cfg(str(tmp_path / "empty.yaml"))


def test_model_overrides_from_yaml_mapping_string_or_command_line(tmp_path):
    from vidformer.config import model_overrides

    (tmp_path / "a.yaml").write_text("MODEL:\n  OVERRIDES: {embed_dim: 16, depths: [1, 2]}\n")
    (tmp_path / "b.yaml").write_text("MODEL:\n  OVERRIDES: \"{'embed_dim': 16, 'depths': [1, 2]}\"\n")
    expected = {"embed_dim": 16, "depths": [1, 2]}
    assert model_overrides(get_cfg(str(tmp_path / "a.yaml"))) == expected
    assert model_overrides(get_cfg(str(tmp_path / "b.yaml"))) == expected
    cfg = get_cfg(str(tmp_path / "a.yaml"), ["MODEL.OVERRIDES", "{'kv_stride_t': 2}"])
    assert model_overrides(cfg) == {"kv_stride_t": 2}
    with pytest.raises(ConfigError, match="MODEL.OVERRIDES in the command line must be a dict literal"):
        get_cfg(None, ["MODEL.OVERRIDES", "[1, 2]"])


@pytest.mark.parametrize("kernel,padding,weight_2d", [((3, 5, 5), (1, 2, 2), False), ((1, 3, 3), (0, 1, 1), True),
                                                      ((3, 3, 3), (0, 1, 0), False)])
def test_depthwise_conv_gradients_equal_torchs_on_the_cpu_path(kernel, padding, weight_2d):
    """CPU training through a stride-1 depthwise SpaceTimeConv takes its own backward: torch's gradients,
    for a batch of two, a channels-last input, a 2-D (image) weight and asymmetric padding."""
    torch.manual_seed(0)
    conv = SpaceTimeConv(6, 6, kernel, padding=padding, groups=6)
    assert (conv.weight.ndim == 4) == weight_2d
    x = torch.randn(2, 6, 4, 7, 8).to(memory_format=torch.channels_last_3d).requires_grad_()
    out = conv(x)
    assert out.grad_fn.name().endswith("_CPUDepthwiseConv3dBackward")
    ref_x = x.detach().clone().requires_grad_()
    ref_weight = conv.weight.detach().clone().requires_grad_()
    ref_bias = conv.bias.detach().clone().requires_grad_()
    weight = ref_weight if ref_weight.ndim == 5 else ref_weight.unsqueeze(2)
    ref = F.conv3d(ref_x, weight, ref_bias, 1, padding, 1, 6)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    assert torch.allclose(out, ref, atol=1e-6)
    for mine, theirs in ((x, ref_x), (conv.weight, ref_weight), (conv.bias, ref_bias)):
        assert mine.grad.shape == theirs.grad.shape
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-4, rtol=1e-5)
    # bf16 autocast on the channels-last input: torch's own weight gradient is wrong there (issue #20)
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv(x)
    low.backward(grad.bfloat16())
    err = (conv.weight.grad - ref_weight.grad).abs().max() / ref_weight.grad.abs().max()
    assert low.dtype == torch.bfloat16 and conv.weight.grad.dtype == torch.float32 and err < 2e-2


def test_eval_mlp_on_many_rows_runs_in_pieces_with_the_same_values(monkeypatch):
    monkeypatch.setattr(mlp_module, "_EVAL_CHUNK_ROWS", 16)
    mlp = Mlp(8, 32, 12).eval()
    calls = []
    mlp.fc1.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    x = torch.randn(2, 37, 8)  # 74 rows: pieces of 16, 16, 16, 16, 10
    plain = mlp.fc2(mlp.act(mlp.fc1(x)))
    calls.clear()
    with torch.no_grad():
        out = mlp(x)
    assert calls == [16, 16, 16, 16, 10]
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)
    calls.clear()
    with torch.no_grad():
        mlp(x[:, :12])  # 24 rows, 1.5 pieces: two
        mlp(x[:, :8])  # 16 rows, one piece: whole
    assert calls == [16, 8, 2]
    calls.clear()
    mlp(x).sum().backward()  # with gradients: one piece, so autograd keeps one hidden buffer
    assert calls == [2]


def test_eval_conv_mlp_on_a_channels_last_grid_runs_in_pieces_with_the_same_values(monkeypatch):
    monkeypatch.setattr(mlp_module, "_EVAL_CHUNK_ROWS", 16)
    mlp = ConvMlp(8, 32).eval()
    x = torch.randn(2, 8, 3, 5, 4).contiguous(memory_format=torch.channels_last_3d)  # 120 rows
    calls = []
    mlp.act.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        plain = mlp.fc2(mlp.act(mlp.fc1(x)))
        calls.clear()
        out = mlp(x)
    assert calls == [16] * 7 + [8] and out.shape == plain.shape
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("act", [nn.GELU, nn.SiLU, "quick_gelu"])
def test_training_mlp_recomputes_its_activation_with_the_same_values_and_gradients(act):
    """fc2 keeps the activation's input only; values and gradients are autograd's, fp32 and under bf16 autocast
    (GELU's own backward op, CvT's QuickGELU through its value_and_grad, any other through autograd)."""
    if act == "quick_gelu":
        from vidformer.models.cvt import QuickGELU as act
    torch.manual_seed(0)
    mlp = Mlp(8, 32, 12, act_layer=act).train()
    x = torch.randn(2, 37, 8, requires_grad=True)
    grad = torch.randn(2, 37, 12)

    def run(fn, inputs):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = fn(inputs)
        params = [inputs, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias]
        return out, torch.autograd.grad(out, params, grad.to(out.dtype)), saved

    out, grads, saved = run(mlp, x)
    ref, ref_grads, ref_saved = run(lambda t: mlp.fc2(mlp.act(mlp.fc1(t))), x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    hidden = 2 * 37 * 32
    assert ref_saved.count(hidden) >= 2 and saved.count(hidden) == 1  # the activation's output is not kept
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, low_grads, _ = run(mlp, x)
        low_ref, low_ref_grads, _ = run(lambda t: mlp.fc2(mlp.act(mlp.fc1(t))), x)
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), low_ref.float(), atol=1e-2)
    for mine, theirs in zip(low_grads, low_ref_grads):
        assert mine.dtype == theirs.dtype and torch.allclose(mine.float(), theirs.float(), rtol=2e-2, atol=2e-2)
    mlp.drop.p = 0.5  # dropout between act and fc2: the plain path, whose mask autograd keeps
    _, _, dropped = run(mlp, x)
    assert dropped.count(hidden) >= 2


def test_training_conv_mlp_on_a_channels_last_grid_recomputes_its_activation():
    """UniFormer's CBlock MLP: as Mlp, the GELU's output is not kept for backward; values and gradients as before."""
    torch.manual_seed(0)
    mlp = ConvMlp(8, 32).train()
    x = torch.randn(2, 8, 3, 5, 4).contiguous(memory_format=torch.channels_last_3d).requires_grad_()

    def run(fn):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = fn(x)
        return out, torch.autograd.grad(out.square().sum(), [x, *mlp.parameters()]), saved

    out, grads, saved = run(mlp)
    ref, ref_grads, ref_saved = run(lambda t: mlp.fc2(mlp.act(mlp.fc1(t))))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    hidden = 2 * 32 * 3 * 5 * 4
    assert ref_saved.count(hidden) >= 2 and saved.count(hidden) == 1
