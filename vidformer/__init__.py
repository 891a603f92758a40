"""vidformer: video recognition with MViTv2, UniFormer, PoolFormer, CvT and DVT in one toolkit."""

__version__ = "0.1.0"

from vidformer.checkpoint import load_pretrained
from vidformer.checkpoint.zoo import list_pretrained
from vidformer.config import get_cfg
from vidformer.engine.recognizer import load_recognizer
from vidformer.models import create_model, list_models

__all__ = ["__version__", "create_model", "get_cfg", "list_models", "list_pretrained", "load_pretrained",
           "load_recognizer"]
