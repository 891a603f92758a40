"""From a config to a model: the one place that maps MODEL/DATA keys onto create_model arguments."""

from fvcore.common.config import CfgNode
from torch import nn

from vidformer.config import model_overrides
from vidformer.models import create_model


def build_model(cfg: CfgNode, *, num_frames: int | None = None) -> nn.Module:
    """The model a config describes (random init; weights are loaded by the trainer/evaluator)."""
    model = create_model(
        cfg.MODEL.MODEL_NAME,
        num_classes=cfg.MODEL.NUM_CLASSES,
        num_frames=num_frames if num_frames is not None else cfg.DATA.NUM_FRAMES,
        img_size=cfg.DATA.TRAIN_CROP_SIZE,
        drop_path_rate=cfg.MODEL.DROPPATH_RATE,
        head_dropout=cfg.MODEL.DROPOUT_RATE,
        **model_overrides(cfg),
    )
    model.pretrained_cfg.mean = tuple(cfg.DATA.MEAN)
    model.pretrained_cfg.std = tuple(cfg.DATA.STD)
    model.pretrained_cfg.sampling_rate = cfg.DATA.SAMPLING_RATE
    if cfg.MODEL.ACT_CHECKPOINT:
        model.set_grad_checkpointing(True)
    return model
