"""Model families, one file each, and the registry that builds them by name."""

from vidformer.models.base import CheckpointLayout, PretrainedCfg, VideoModel
from vidformer.models.registry import create_model, list_models, register_model
from vidformer.models import mvitv2  # noqa: F401  registers mvitv2_t, mvitv2_s, mvitv2_b, mvitv2_l
from vidformer.models import poolformer  # noqa: F401  registers poolformer_*
from vidformer.models import cvt  # noqa: F401  registers cvt_*
from vidformer.models import dvt  # noqa: F401  registers dvt_deit_s
from vidformer.models import uniformer  # noqa: F401  registers uniformer_s, uniformer_b
from vidformer.models import pytorchvideo_hub  # noqa: F401  registers pytorchvideo/x3d_m, ... (baselines)

__all__ = ["CheckpointLayout", "PretrainedCfg", "VideoModel", "create_model", "list_models", "register_model"]
