"""How scores are combined: the views of one video into its score (TEST.ENSEMBLE_METHOD, PySlowFast's
DATA.ENSEMBLE_METHOD), and the saved per-view logits of several models (test_scores.pt files written by
`vidformer test --save-scores`) into one ensemble, without a model or a video.

The evaluator, demo and adaptive inference all aggregate through aggregate_views, so a video scores the
same whichever of them ran it.
"""

import torch

from vidformer.errors import UsageError

ENSEMBLE_METHODS = ("sum", "logits", "max")


def aggregate_views(view_logits: torch.Tensor, method: str) -> torch.Tensor:
    """(V, K) logits of one video's views -> (K,) video scores."""
    if method == "sum":
        return view_logits.float().softmax(dim=-1).sum(dim=0)
    if method == "logits":
        return view_logits.float().sum(dim=0)
    if method == "max":
        return view_logits.float().softmax(dim=-1).max(dim=0).values
    raise UsageError(f"TEST.ENSEMBLE_METHOD is {method!r}; expected one of {', '.join(ENSEMBLE_METHODS)}")


def load_scores(path: str) -> dict:
    """A test_scores.pt file, checked for what an ensemble needs (per-view logits, labels, paths)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"--scores: '{path}' does not exist (KEY VALUE overrides go before --scores)") from None
    except IsADirectoryError:
        raise UsageError(f"--scores: '{path}' is a directory; expected a test_scores.pt file") from None
    except Exception as e:  # any unreadable file is the user's input, not a bug
        raise UsageError(f"--scores: '{path}' is not a test_scores.pt file ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or not {"label", "paths", "scores"} <= set(saved):
        raise UsageError(f"--scores: '{path}' is not a test_scores.pt file written by `vidformer test --save-scores`")
    if "view_logits" not in saved:
        raise UsageError(f"--scores: '{path}' holds per-video scores only (an older test_scores.pt); run "
                         f"`vidformer test --save-scores` again to keep the per-view logits an ensemble needs")
    return saved


def check_same_videos(files: dict[str, dict]) -> None:
    """Every saved file must hold the same videos, with the same labels and classes, in the same order."""
    (first, ref), *others = files.items()
    for path, saved in others:
        if saved["view_logits"].shape[-1] != ref["view_logits"].shape[-1]:
            raise UsageError(f"--scores: '{path}' has {saved['view_logits'].shape[-1]} classes but '{first}' has "
                             f"{ref['view_logits'].shape[-1]}")
        if len(saved["paths"]) != len(ref["paths"]):
            raise UsageError(f"--scores: '{path}' holds {len(saved['paths'])} videos but '{first}' holds "
                             f"{len(ref['paths'])}; test both on the same split (and with the same failed videos)")
        for i, (a, b) in enumerate(zip(ref["paths"], saved["paths"])):
            if a != b:
                raise UsageError(f"--scores: '{path}' differs from '{first}' at video {i}: '{b}' instead of '{a}'; "
                                 f"the files must hold the same videos in the same order")
        if not torch.equal(torch.as_tensor(saved["label"]), torch.as_tensor(ref["label"])):
            raise UsageError(f"--scores: '{path}' has other labels than '{first}' for the same videos")


def model_scores(view_logits: torch.Tensor, method: str) -> torch.Tensor:
    """(N, V, K) per-view logits of one model (rows of NaN: views adaptive testing did not run) -> (N, K)
    per-video scores, averaged over the views used so that every model weighs the same in an ensemble
    whatever its number of views ("max" takes the maximum)."""
    out = []
    for video in view_logits:
        used = video[torch.isfinite(video).all(dim=-1)]
        scores = aggregate_views(used, method)
        out.append(scores if method == "max" else scores / used.shape[0])
    return torch.stack(out) if out else torch.zeros(0, view_logits.shape[-1])


def ensemble_scores(files: dict[str, dict], method: str) -> torch.Tensor:
    """(N, K) ensemble of several saved test_scores.pt: per model, its views combined by `method` (mean
    softmax for "sum", mean logits for "logits"); then summed over models ("max": the maximum)."""
    check_same_videos(files)
    per_model = torch.stack([model_scores(saved["view_logits"], method) for saved in files.values()])
    return per_model.max(dim=0).values if method == "max" else per_model.sum(dim=0)
