"""Building blocks shared by the model families. Only what two or more families use lives here."""

from vidformer.layers.attention import attention, attention_in_fp32, factored_bias_attention
from vidformer.layers.fusion import fuse_for_inference
from vidformer.layers.conv import CubePatchEmbed, SpaceTimeConv, depthwise_conv3d, triple
from vidformer.layers.mlp import ConvMlp, DropPath, Mlp, drop_path_rates, init_linears, trunc_normal_init
from vidformer.layers.norm import GroupNorm1, LayerNormChannels
from vidformer.layers.tokens import as_video, size_constant, to_grid, to_tokens

__all__ = [
    "attention", "attention_in_fp32", "factored_bias_attention", "fuse_for_inference", "ConvMlp", "CubePatchEmbed",
    "SpaceTimeConv", "depthwise_conv3d", "triple", "DropPath", "Mlp", "drop_path_rates", "init_linears",
    "trunc_normal_init", "GroupNorm1", "LayerNormChannels", "as_video", "size_constant", "to_grid", "to_tokens",
]
