"""Parameters and FLOPs of any model with fvcore, in the papers' convention (one multiply-add = one FLOP).

fvcore counts convolutions, linear layers, matmul/einsum/bmm and norms; vidformer adds the fused
attention op (scaled_dot_product_attention: the QK^T and AV products), so attention is counted the
same whether a model runs it fused or explicitly, and `vidformer::factored_bias_attention` (MViTv2's
rel-pos bias folded into that matmul) as the papers count it: QK^T and AV over the head width, the bias
an addition (its q.R products are matmuls outside the op, counted as such). `vidformer::grid_resize`
(DVT's area resize of token grids, run as a matrix product) is left uncounted, as fvcore leaves the
upsampling and pooling it computes.
"""

import logging
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts its focal loss at import, which current torch flags as deprecated
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

CONVENTION = "1 multiply-add = 1 FLOP (fvcore; the convention of the MViTv2/UniFormer/PoolFormer/CvT papers)"


def _sdpa_flop(inputs, outputs) -> int:
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for n in q[:-2]:
        batch *= n
    nq, d = q[-2], q[-1]
    nk, dv = k[-2], v[-1]
    return batch * nq * nk * (d + dv)


@dataclass
class FlopReport:
    params_m: float
    gflops: float
    input_shape: tuple[int, ...]
    convention: str = CONVENTION

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"params {self.params_m:.2f} M, {self.gflops:.2f} GFLOPs per view for input "
                f"{tuple(self.input_shape)} ({self.convention})")


def _analysis(model: nn.Module, inputs: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop)
    analysis.set_op_handle("vidformer::factored_bias_attention", _sdpa_flop)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    # fvcore logs every op it skips (elementwise adds, softmax): cost-free and not counted by the papers
    logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)
    return analysis


def _run(model: nn.Module, inputs: torch.Tensor, read):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return read(_analysis(model, inputs))
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, inputs: torch.Tensor) -> float:
    """GFLOPs of one forward pass on `inputs` (the batch included)."""
    return _run(model, inputs, lambda a: a.total()) / 1e9


def flops_by_module(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """FLOPs (not G) of one forward pass attributed to every module name ("" is the whole model)."""
    return _run(model, inputs, lambda a: dict(a.by_module()))


def count_params(model: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def model_flops(model: nn.Module, num_frames: int = 16, img_size: int = 224) -> FlopReport:
    """Parameters and GFLOPs of one view (batch 1) of num_frames x img_size x img_size."""
    shape = (1, 3, num_frames, img_size, img_size)
    x = torch.zeros(shape, device=next(model.parameters()).device)
    return FlopReport(count_params(model), count_flops(model, x), shape)
