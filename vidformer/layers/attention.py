"""Scaled dot-product attention through torch's fused kernels, with an optional additive bias.

Every family's attention goes through `attention()` so that precision policy lives in one place:
inside `attention_in_fp32()` the softmax and both matmuls run in float32 even under autocast
(TRAIN.ATTENTION_FP32), which is what keeps bf16/fp16 training of long token sequences stable.
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
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=None if bias is None else bias.float(), scale=scale)
        return out.to(dtype)
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
