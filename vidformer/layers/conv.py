"""Convolutions over (B, C, T, H, W) whose weight is stored 2-D when the temporal kernel is 1.

This is what makes "T=1 is the image model" literal: an image model's patch embedding or
pooling conv has a weight of shape (out, in, kh, kw), exactly as in image checkpoints, and the
video model's has (out, in, kt, kh, kw). Both are one 3-D convolution (the 2-D weight viewed with a
temporal axis of 1); a one-frame input through a 2-D weight runs as the equal conv2d, because torch's CPU
conv2d kernels are several times faster than conv3d's on a (1, kh, kw) kernel (depthwise ones above
all, forward and backward).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def triple(v) -> tuple[int, int, int]:
    """An int or a (t, h, w) sequence as a (t, h, w) tuple."""
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 3:
        raise ValueError(f"expected an int or a (t, h, w) triple, got {v}")
    return v


class _CPUDepthwiseConv3d(torch.autograd.Function):
    """Stride-1 depthwise conv3d; its backward as two more depthwise convolutions in the forward kernel.

    torch's CPU backward of a depthwise conv3d (slow_conv3d / mkldnn backward) runs at a few percent of
    its forward: 30-60x the forward time for UniFormer's 5x5x5 local aggregator. Both gradients are
    convolutions the forward kernel does well: dx = conv(dy, w flipped in t, h, w) with padding k - 1 - p,
    and dw[c] = conv(x_pad[c], dy[c]) summed over the batch, the batch as the group's input channels.
    Under autocast the forward casts as F.conv3d would and the backward runs in that dtype; unlike torch's,
    this weight gradient is right for a channels-last bf16 input (vidformer issue #20).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        with torch.autocast("cpu", enabled=False):
            return F.conv3d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        channels, kernel, padding = x.shape[1], weight.shape[2:], ctx.padding
        dy = dy.to(x.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = F.conv3d(dy, weight.flip(2, 3, 4), None, 1, tuple(k - 1 - p for k, p in zip(kernel, padding)), 1,
                          channels)
        if ctx.needs_input_grad[1]:
            pt, ph, pw = padding
            x_pad = F.pad(x, (pw, pw, ph, ph, pt, pt)).transpose(0, 1)  # (C, B, T + 2 pt, H + 2 ph, W + 2 pw)
            dw = F.conv3d(x_pad.reshape(1, -1, *x_pad.shape[2:]), dy.transpose(0, 1), None, 1, 0, 1, channels)
            dw = dw.view_as(weight)  # (1, C, kt, kh, kw) -> (C, 1, kt, kh, kw)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3, 4))
        return dx, dw, db, None


def depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding) -> torch.Tensor:
    """F.conv3d with one filter per channel (weight (C, 1, kt, kh, kw)). CPU training at stride 1, with padding
    inside the kernel's reach, takes its gradients as two more forward convolutions (_CPUDepthwiseConv3d)."""
    stride, padding = triple(stride), triple(padding)
    if (x.device.type == "cpu" and torch.is_grad_enabled() and stride == (1, 1, 1)
            and all(p < k for p, k in zip(padding, weight.shape[2:]))):
        return _CPUDepthwiseConv3d.apply(x, weight, bias, padding)
    return F.conv3d(x, weight, bias, stride, padding, 1, weight.shape[0])


class SpaceTimeConv(nn.Module):
    """Conv3d on (B, C, T, H, W); weight (out, in/groups, kh, kw) if the temporal kernel is 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding = triple(kernel_size), triple(stride), triple(padding)
        spatial = self.kernel_size[1:] if self.kernel_size[0] == 1 else self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *spatial))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # same default as torch.nn.ConvNd
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a clip length that is not a plain int (a tensor while jit-tracing, a SymInt left dynamic by torch.export)
        # takes the conv3d: the same arithmetic, and no branch on it is recorded as a constant or a guard
        frames = x.shape[2]
        if self._is_pointwise() and x.is_contiguous(memory_format=torch.channels_last_3d):
            # channels-last: a 1x1x1 conv is a Linear on the (B, T, H, W, C) view, one GEMM with no layout copies
            return F.linear(x.movedim(1, -1), self.weight.flatten(1), self.bias).movedim(-1, 1)
        if self.weight.ndim == 4 and self.padding[0] == 0 and isinstance(frames, int) and frames == 1:
            return F.conv2d(x.squeeze(2), self.weight, self.bias, self.stride[1:], self.padding[1:], 1,
                            self.groups).unsqueeze(2)
        weight = self.weight if self.weight.ndim == 5 else self.weight.unsqueeze(2)
        if self.groups == self.in_channels == self.out_channels:
            return depthwise_conv3d(x, weight, self.bias, self.stride, self.padding)
        return F.conv3d(x, weight, self.bias, self.stride, self.padding, 1, self.groups)

    def _is_pointwise(self) -> bool:
        return (self.kernel_size == (1, 1, 1) and self.stride == (1, 1, 1) and self.padding == (0, 0, 0)
                and self.groups == 1)

    def output_size(self, thw: tuple[int, int, int]) -> tuple[int, int, int]:
        """Grid size after this conv for an input grid (T, H, W)."""
        return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(thw, self.kernel_size, self.stride, self.padding))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")


class CubePatchEmbed(nn.Module):
    """Patchify a clip into a grid of tokens with one SpaceTimeConv: (B, 3, T, H, W) -> (B, C, T', H', W').

    With num_frames=1 pass a temporal kernel/stride/padding of 1/1/0; the weight is then 2-D and
    image checkpoints load as they are.
    """

    def __init__(self, in_channels: int, embed_dim: int, kernel_size, stride, padding=0,
                 norm: nn.Module | None = None):
        super().__init__()
        self.proj = SpaceTimeConv(in_channels, embed_dim, kernel_size, stride, padding)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))
