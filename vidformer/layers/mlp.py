"""The transformer MLPs, stochastic depth and the ViT-style linear init, shared by the families."""

import torch
import torch.nn.functional as F
from torch import nn

from vidformer.layers.conv import SpaceTimeConv


# rows per piece of the eval-mode MLP on long inputs (see Mlp.forward)
_EVAL_CHUNK_ROWS = 1024


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout, on the last axis.

    In eval mode without gradients, an input of more than _EVAL_CHUNK_ROWS rows (MViTv2's first stage: 25k
    tokens; CvT's last stage: 8 x 197) runs in pieces of that many rows: each piece's hidden activations (4x the
    width) stay in cache between the two linears and the activation, instead of a fresh buffer written and read
    back (1.7x faster at 25k rows; cvt_13's batch-8 forward 13 % faster since 1576 rows, 1.3x the piece, no longer
    run whole; the same values: rows are independent). Under torch.compile/export, or for a symbolic size, it is
    one piece.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _in_pieces(self, x):
            return _rows_in_pieces(x, self.fc2.out_features, lambda rows: self.fc2(self.act(self.fc1(rows))))
        hidden = self.fc1(x)
        if _recompute_activation(self, hidden):
            return _ActivationRecomputed.apply(hidden, self.fc2.weight, self.fc2.bias, self.act)
        return self.drop(self.fc2(self.drop(self.act(hidden))))


def _recompute_activation(mlp: nn.Module, hidden: torch.Tensor) -> bool:
    """Eager training without dropout: fc2 then saves the activation's input only (see _ActivationRecomputed).
    Eval with gradients (a trace, a saliency map, a fused model whose residual is added in place) keeps the
    plain path; under torch.compile the partitioner makes that choice itself (it recomputes pointwise ops)."""
    drop = getattr(mlp, "drop", None)
    return (mlp.training and hidden.requires_grad and torch.is_grad_enabled() and not (drop is not None and drop.p > 0)
            and not torch.compiler.is_compiling())


class _ActivationRecomputed(torch.autograd.Function):
    """linear(act(h), W, b) that keeps h for backward and recomputes act(h) there, instead of keeping both.

    Autograd would save act's input for act's backward and act's output for the linear's: two hidden-width
    tensors per MLP, its largest activations. Recomputing the activation (one pointwise pass) frees one of
    them: mvitv2_s's training peak at 16x224 went from 1548 to 1442 MB (torchvision 1855), uniformer_s's at
    8x224 (ConvMlp) from 541 to 476 MB, for one more GELU per MLP (~3 % of a uniformer_s step). The gradients
    are the linear's own (dW = g^T a, db = sum g, da = g W) and act's, in the forward's dtype (under autocast
    the activations').
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, act):
        ctx.act = act
        ctx.save_for_backward(hidden, weight)
        ctx.has_bias = bias is not None
        return F.linear(act(hidden), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight = ctx.saved_tensors
        act = ctx.act
        grad_activated = grad @ weight.to(grad.dtype)
        if isinstance(act, nn.GELU):  # every family's MLP: GELU's own backward, no nested autograd call
            activated = F.gelu(hidden, approximate=act.approximate)
            grad_hidden = torch.ops.aten.gelu_backward(grad_activated, hidden, approximate=act.approximate)
        elif hasattr(act, "value_and_grad"):  # an activation that states its own (CvT's QuickGELU)
            activated, grad_hidden = act.value_and_grad(hidden, grad_activated)
        else:
            with torch.enable_grad():
                leaf = hidden.detach().requires_grad_()
                activated = act(leaf)
            grad_hidden, = torch.autograd.grad(activated, leaf, grad_activated)
        rows = grad.reshape(-1, grad.shape[-1])
        grad_weight = rows.t() @ activated.detach().reshape(-1, activated.shape[-1]).to(rows.dtype)
        grad_bias = rows.sum(0) if ctx.has_bias else None
        return grad_hidden, grad_weight, grad_bias, None


def _in_pieces(module: nn.Module, rows_last: torch.Tensor) -> bool:
    """Eval, no gradient, eager, and a concrete number of rows (of the last axis) worth splitting."""
    rows = rows_last.numel() // rows_last.shape[-1] if rows_last.shape[-1] else 0
    return (not module.training and not torch.is_grad_enabled() and isinstance(rows, int)
            and rows > _EVAL_CHUNK_ROWS and not torch.compiler.is_compiling())


def _rows_in_pieces(x: torch.Tensor, out_features: int, fn) -> torch.Tensor:
    """fn (row-wise, (n, C) -> (n, out_features)) over x's rows in pieces of _EVAL_CHUNK_ROWS, one output buffer."""
    flat = x.reshape(-1, x.shape[-1])
    out = flat.new_empty(flat.shape[0], out_features)
    for piece, dest in zip(flat.split(_EVAL_CHUNK_ROWS), out.split(_EVAL_CHUNK_ROWS)):
        dest.copy_(fn(piece))
    return out.view(*x.shape[:-1], out_features)


class ConvMlp(nn.Module):
    """The MLP on (B, C, T, H, W) grids: 1x1x1 conv -> GELU -> 1x1x1 conv (weights (out, in, 1, 1)).

    On a channels-last grid it runs as Mlp does: in pieces in eval, with the GELU recomputed in training.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = SpaceTimeConv(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = SpaceTimeConv(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.movedim(1, -1)  # (B, T, H, W, C): contiguous for a channels-last grid
        if tokens.is_contiguous() and _in_pieces(self, tokens):  # as Mlp.forward
            w1, w2 = self.fc1.weight.flatten(1), self.fc2.weight.flatten(1)
            out = _rows_in_pieces(tokens, w2.shape[0],
                                  lambda rows: F.linear(self.act(F.linear(rows, w1, self.fc1.bias)), w2, self.fc2.bias))
            return out.movedim(-1, 1)
        hidden = self.fc1(x)
        if tokens.is_contiguous() and _recompute_activation(self, hidden):  # as Mlp.forward, on the token view
            w2 = self.fc2.weight.flatten(1)
            return _ActivationRecomputed.apply(hidden.movedim(1, -1), w2, self.fc2.bias, self.act).movedim(-1, 1)
        return self.fc2(self.act(hidden))


def trunc_normal_init(layer: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal weight and zero bias: the init every family's papers use for linear layers."""
    nn.init.trunc_normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_linears(model: nn.Module, std: float = 0.02) -> None:
    """trunc_normal_init on every nn.Linear of a model (norms and convs keep torch's defaults)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_init(m, std)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a whole sample with probability p, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # one pass over x (the mask is one value per sample)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to `rate` at the last."""
    if depth <= 1:
        return [0.0] * depth
    return [rate * i / (depth - 1) for i in range(depth)]
