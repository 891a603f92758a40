"""torch.compile and bf16 autocast on tiny models of the registered families.

A compiled model is ONE graph (fullgraph=True: no graph breaks, no Python fallbacks) and gives eager's
outputs and gradients. Every family is compiled with the aot_eager backend (the graph capture and
autograd tracing of torch.compile with eager kernels: 10-30 s per tiny model on 2 cores); mvitv2_s's
forward is also compiled with inductor (generated C++, over a minute).

Under bf16 autocast every family stays finite and close to fp32, and inside `attention_in_fp32()` every
attention call runs in float32.
"""

import pytest
import torch
import torch.nn.functional as F

from vidformer.engine.bench import QUICK_OVERRIDES
from vidformer.layers import attention_in_fp32
from vidformer.models import create_model, list_models

FAMILIES = ("mvitv2_s", "uniformer_s", "poolformer_s12", "cvt_13", "dvt_deit_s")
# poolformer_s12 has no attention; its MetaFormer hybrid (attention in stages 3-4) exercises the fp32 switch
ATTENTION_OVERRIDES = {"poolformer_s12": {"token_mixers": ("pool", "pool", "attention", "attention"),
                                          "attn_head_dim": 16}}


def _registered(names):
    return [pytest.param(n, marks=pytest.mark.skipif(n not in list_models(), reason=f"{n} is not registered yet"))
            for n in names]


def _tiny(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    family = name.split("_")[0]
    return create_model(name, num_classes=5, num_frames=4, img_size=32, drop_path_rate=0.0, head_dropout=0.0,
                        **QUICK_OVERRIDES[family], **extra)


def _clip(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def _logits(out) -> torch.Tensor:
    return torch.stack(list(out)).mean(0) if isinstance(out, (list, tuple)) else out


def _assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    err = ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
    assert err <= rel, f"max |difference| is {err:.2e} of max |expected|, allowed {rel:.0e}"


def _compiled_matches_eager(name: str, backend: str, train: bool = True) -> None:
    torch._dynamo.reset()
    model = _tiny(name)
    x = _clip()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    model.eval()
    with torch.no_grad():
        _assert_close_rel(compiled(x), model(x), 1e-4)
    if not train:
        return
    # training: outputs and every parameter gradient (batch statistics, no dropout: deterministic)
    model.train()
    grads = []
    for fn in (model, compiled):
        model.zero_grad(set_to_none=True)
        out = _logits(fn(x))
        F.cross_entropy(out, torch.tensor([0, 3])).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (eager_out, eager_grads), (comp_out, comp_grads) = grads
    _assert_close_rel(comp_out, eager_out, 1e-4)
    assert len(comp_grads) == len(eager_grads) > 0
    # rounding follows the size of the terms summed, not of the sum: a near-cancelling gradient (a bias whose
    # entries all lie under 1e-3) is held to the scale of the step's gradients
    scale = max(g.abs().max().item() for g in eager_grads)
    for g_comp, g_eager in zip(comp_grads, eager_grads):
        torch.testing.assert_close(g_comp, g_eager, atol=1e-5 * max(g_eager.abs().max().item(), 1e-2 * scale),
                                   rtol=1e-3)


@pytest.mark.slow
def test_mvitv2_compiles_with_inductor():
    if "mvitv2_s" not in list_models():
        pytest.skip("mvitv2_s is not registered yet")
    _compiled_matches_eager("mvitv2_s", "inductor", train=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", _registered(FAMILIES))
def test_family_compiles_as_one_graph(name):
    _compiled_matches_eager(name, "aot_eager")


@pytest.mark.parametrize("name", _registered(FAMILIES))
def test_bf16_autocast_is_finite_and_close_to_fp32(name):
    model = _tiny(name, **ATTENTION_OVERRIDES.get(name, {})).eval()
    x = _clip()
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
            with attention_in_fp32():
                low_fp32_attention = model(x)
    for out in (low, low_fp32_attention):
        assert torch.isfinite(out).all()
        # bf16 keeps 8 bits of mantissa: a few per cent of the logits' range after a dozen layers
        _assert_close_rel(out, reference, 5e-2)


@pytest.mark.parametrize("name", _registered(FAMILIES))
def test_attention_in_fp32_runs_every_attention_in_fp32(name, monkeypatch):
    model = _tiny(name, **ATTENTION_OVERRIDES.get(name, {})).eval()
    seen = []
    sdpa = F.scaled_dot_product_attention

    def recording_sdpa(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(_clip())
        under_autocast, seen[:] = list(seen), []
        with attention_in_fp32():
            out = model(_clip())
    assert under_autocast and all(d == (torch.bfloat16,) * 3 for d in under_autocast)
    assert len(seen) == len(under_autocast) and all(d == (torch.float32,) * 3 for d in seen)
    assert out.dtype == torch.bfloat16  # the model around the attention stays in bf16
