"""Turn any checkpoint a model family understands into a native vidformer checkpoint file."""

from dataclasses import asdict

from safetensors.torch import save_file

from vidformer.checkpoint.io import save_checkpoint
from vidformer.checkpoint.loader import LoadReport, load_pretrained
from vidformer.models import create_model


def convert_checkpoint(src: str, dst: str, model_name: str, *, num_frames: int | None = None,
                       img_size: int | None = None, num_classes: int | None = None,
                       inflate: str = "center", allow_partial: bool = False) -> LoadReport:
    """Load `src` into `model_name` (image or video geometry) and write the native checkpoint `dst`.

    Weights that do not fit the model (LoadReport.check_fit) are refused, and nothing is written,
    unless allow_partial. Without num_classes the classifier keeps the checkpoint's class count. A `.safetensors` dst
    gets the bare state dict; anything else a dict with "model_state" and the model's metadata.
    """
    model = create_model(model_name, num_classes=num_classes or 400, num_frames=num_frames, img_size=img_size)
    report = load_pretrained(model, src, inflate=inflate)
    if num_classes is None and report.checkpoint_num_classes is not None:
        model.reset_classifier(report.checkpoint_num_classes)
        report = load_pretrained(model, src, inflate=inflate)
    report.check_fit(allow_partial)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if dst.endswith(".safetensors"):
        save_file(state, dst)
    else:
        save_checkpoint({"model_state": state, "model_name": model_name, "num_classes": model.num_classes,
                         "pretrained_cfg": asdict(model.pretrained_cfg), "converted_from": src,
                         "layout": report.layout}, dst)
    return report
