"""From a config to a model: the one place that maps MODEL/DATA keys onto create_model arguments, and
MODEL.COMPILE_* onto torch.compile's."""

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


def compile_options(backend: str, mode: str) -> dict:
    """torch.compile keyword arguments for a backend and mode (checked by config.check_compile_settings).

    dynamic=False: every input shape gets a graph specialised to it. Training batches all have one shape
    (drop_last); the test views come in TEST.BATCH_SIZE chunks plus a smaller last chunk when the view count is
    not a multiple of it, so a test compiles at most two graphs (three with TEST.ADAPTIVE_VIEWS, which runs
    one view at a time), each once, instead of one slower graph with a symbolic batch size.
    """
    return {"backend": backend, "mode": mode, "dynamic": False}


def cfg_compile_options(cfg: CfgNode) -> dict:
    """compile_options of MODEL.COMPILE_BACKEND and MODEL.COMPILE_MODE."""
    return compile_options(cfg.MODEL.COMPILE_BACKEND, cfg.MODEL.COMPILE_MODE)
