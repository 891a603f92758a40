"""Scaled dot-product attention through torch's fused kernels, with an optional additive bias.

Every family's attention goes through `attention()` so that precision policy lives in one place:
inside `attention_in_fp32()` the softmax and both matmuls run in float32 even under autocast
(TRAIN.ATTENTION_FP32), which is what keeps bf16/fp16 training of long token sequences stable.

`factored_bias_attention()` is attention with a low-rank additive bias (MViTv2's decomposed rel-pos),
folded into the QK^T matmul. It is one registered op, `vidformer::factored_bias_attention`, whose kernel
is plain torch (CompositeImplicitAutograd: autograd, torch.compile and torch.export see its ops), so that
a trace records it as one node and FLOP counting (vidformer/flops.py) counts the path that runs.
"""

import contextlib
import contextvars

import torch
import torch.nn.functional as F

_FP32 = contextvars.ContextVar("vidformer_attention_fp32", default=False)


@contextlib.contextmanager
def attention_in_fp32(enabled: bool = True):
    """Run every `attention()` call inside this block in float32."""
    token = _FP32.set(enabled)
    try:
        yield
    finally:
        _FP32.reset(token)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v for q (B, heads, Nq, d), k/v (B, heads, Nk, d).

    `bias` broadcasts to (B, heads, Nq, Nk). `scale` defaults to d ** -0.5.
    """
    if _FP32.get() and q.dtype != torch.float32:
        dtype = q.dtype
        with torch.autocast(device_type=q.device.type, enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                 attn_mask=None if bias is None else bias.float(), scale=scale)
        return out.to(dtype)
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


torch.library.define("vidformer::factored_bias_attention",
                     "(Tensor q, Tensor k, Tensor v, Tensor q_terms, Tensor key_terms) -> Tensor")


# the augmented head width is padded with zero columns to a multiple of this: torch's CPU flash kernels run
# whole vectors then (measured with AVX-512: bf16 forward 1.4-1.6x faster at MViTv2's 118 -> 128, fp32 level)
_AUG_WIDTH_MULTIPLE = 16


@torch.library.impl("vidformer::factored_bias_attention", "CompositeImplicitAutograd")
def _factored_bias_attention(q, k, v, q_terms, key_terms):
    # [q | q_terms | 0] . [k * scale | key_terms | 0]^T = scale q.k + bias; v is zero-padded to the same width
    # (the fused kernels take one head width for q, k and v). The scale goes on the keys: after KV pooling
    # they are up to 64x fewer than the queries
    b, heads, nq, d = q.shape
    extra = key_terms.shape[-1]
    pad = -(d + extra) % _AUG_WIDTH_MULTIPLE
    zero = q.new_zeros(())
    q_aug = torch.cat([q, q_terms, zero.expand(b, heads, nq, pad)], dim=-1)  # (B, heads, Nq, width)
    k_aug = torch.cat([k * d ** -0.5, key_terms.expand(b, heads, -1, -1), zero.expand(b, heads, k.shape[2], pad)],
                      dim=-1)
    out = attention(q_aug, k_aug, F.pad(v, (0, extra + pad)), scale=1.0)
    return out[..., :d]


def factored_bias_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_terms: torch.Tensor,
                            key_terms: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * d ** -0.5 + q_terms key_terms^T) v, the (Nq, Nk) bias never built.

    q (B, heads, Nq, d), k/v (B, heads, Nk, d), q_terms (B, heads, Nq, e), key_terms (Nk, e) (or anything that
    broadcasts to (B, heads, Nk, e)). Appending the terms to q and k makes the bias part of the QK^T
    matmul, so SDPA keeps its fused kernels in forward and backward.
    """
    return torch.ops.vidformer.factored_bias_attention(q, k, v, q_terms, key_terms)
