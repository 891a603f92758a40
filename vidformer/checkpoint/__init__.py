"""Checkpoints: safe reading, atomic writing, layout detection and conversion, inflation, load reports."""

from vidformer.checkpoint.inflate import INFLATE_METHODS, deflate_kernel, inflate_kernel, resize_pos_embed, resize_rel_pos
from vidformer.checkpoint.io import load_checkpoint_file, save_checkpoint, unwrap_state_dict
from vidformer.checkpoint.loader import LoadReport, load_pretrained
from vidformer.checkpoint.convert import convert_checkpoint

__all__ = [
    "INFLATE_METHODS", "LoadReport", "convert_checkpoint", "deflate_kernel", "inflate_kernel", "load_checkpoint_file", "load_pretrained",
    "resize_pos_embed", "resize_rel_pos", "save_checkpoint", "unwrap_state_dict",
]
