"""Mixup / CutMix soft targets and label smoothing."""

import pytest
import torch

from vidformer.config import get_cfg
from vidformer.data import MixupCutmix, build_mixup, smooth_one_hot


def test_smooth_one_hot():
    target = smooth_one_hot(torch.tensor([2, 0]), 4, eps=0.1)
    assert torch.allclose(target[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    assert torch.allclose(target.sum(1), torch.ones(2))
    assert torch.equal(smooth_one_hot(torch.tensor([1]), 3), torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixup_mixes_videos_and_targets_with_one_lambda():
    torch.manual_seed(0)
    video = torch.randn(4, 3, 2, 8, 8)
    label = torch.tensor([0, 1, 2, 3])
    mixed, target = MixupCutmix(4, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)(video, label)
    lam = float(target[0, 0])
    assert 0 < lam < 1 and torch.allclose(target[0], torch.tensor([lam, 0, 0, 1 - lam]))
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.flip(0), atol=1e-6)


def test_cutmix_box_is_shared_over_time_and_sets_lambda():
    torch.manual_seed(3)
    video = torch.stack([torch.full((3, 4, 16, 16), float(k)) for k in range(2)])  # sample k is all k
    mixed, target = MixupCutmix(2, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)(video, torch.tensor([0, 1]))
    pasted = mixed[0] == 1.0  # pixels of sample 0 that came from sample 1
    assert pasted.any() and torch.equal(pasted, pasted[:, :1].expand_as(pasted))  # same box in every frame
    share = pasted.float().mean()
    # target: (1 - share) of smoothed label 0 plus share of smoothed label 1
    expected = (1 - share) * torch.tensor([0.95, 0.05]) + share * torch.tensor([0.05, 0.95])
    assert torch.allclose(target[0], expected, atol=1e-6)


def test_prob_zero_only_smooths_and_build_from_config():
    video = torch.randn(2, 3, 1, 4, 4)
    mixed, target = MixupCutmix(3, prob=0.0, label_smoothing=0.3)(video, torch.tensor([1, 2]))
    assert torch.equal(mixed, video) and torch.allclose(target[0], torch.tensor([0.1, 0.8, 0.1]))
    assert build_mixup(get_cfg(), 400) is None
    mixup = build_mixup(get_cfg(overrides=["MIXUP.ENABLE", "True", "MIXUP.ALPHA", "0.5"]), 10)
    assert (mixup.num_classes, mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing) == (10, 0.5, 1.0, pytest.approx(0.1))
