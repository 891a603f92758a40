"""Checkpoint mechanism on the toy model: layouts, inflation, interpolation, head handling, safety."""

import os

import pytest
import torch

import vidformer
from vidformer.checkpoint import (deflate_kernel, inflate_kernel, load_checkpoint_file, load_pretrained,
                                  resize_pos_embed, save_checkpoint)
from vidformer.cli import main
from vidformer.errors import UsageError
from tests.toy import to_reference


def _image_model(**kw):
    torch.manual_seed(0)
    return vidformer.create_model("toy_video", num_frames=1, **kw).eval()


def test_center_inflation_reproduces_image_logits_on_a_static_clip():
    image = _image_model()
    video = vidformer.create_model("toy_video", num_frames=4).eval()
    report = load_pretrained(video, image.state_dict(), inflate="center")
    assert report.inflated == {"patch_embed.proj.weight": "center, kt=3"}
    assert report.zeroed == ["rel_pos_t"] and not report.missing and not report.mismatched
    frame = torch.randn(2, 3, 32, 32)
    clip = frame.unsqueeze(2).expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        ref, out = image(frame), video(clip)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_average_inflation_divides_by_kt_and_video_to_image_sums_over_time():
    w = torch.randn(8, 3, 4, 4)
    avg = inflate_kernel(w, 3, "average")
    assert avg.shape == (8, 3, 3, 4, 4) and torch.allclose(avg.sum(2), w, atol=1e-6)
    assert torch.equal(deflate_kernel(inflate_kernel(w, 5, "center")), w)
    video = vidformer.create_model("toy_video", num_frames=4)
    image = _image_model()
    report = load_pretrained(image, video.state_dict())
    assert "3-D -> 2-D" in report.inflated["patch_embed.proj.weight"]
    assert report.unexpected == ["rel_pos_t"]
    assert torch.allclose(image.patch_embed.proj.weight, video.patch_embed.proj.weight.sum(2))


def test_foreign_layout_is_detected_converted_and_the_head_with_other_classes_dropped():
    src = _image_model(num_classes=7)
    dst = vidformer.create_model("toy_video", num_frames=1, num_classes=3)
    report = load_pretrained(dst, to_reference(src.state_dict()))
    assert report.layout == "reference" and report.converted
    assert set(report.dropped) == {"head.weight", "head.bias"} and report.checkpoint_num_classes == 7
    assert torch.equal(dst.qkv.weight, src.qkv.weight)
    assert "dropped" in str(report) and "reference" in str(report)


def test_tables_are_interpolated_and_reported():
    small = _image_model(img_size=32)  # rel_pos_h has 2*8-1 = 15 rows
    big = vidformer.create_model("toy_video", num_frames=1, img_size=64)  # 31 rows
    report = load_pretrained(big, small.state_dict())
    assert report.interpolated == {"rel_pos_h": "15 -> 31 rows"}
    # linear interpolation keeps the table's end points' neighbourhood and its mean closely
    assert torch.allclose(big.rel_pos_h.mean(0), small.rel_pos_h.mean(0), atol=2e-3)
    pos = torch.randn(1, 1 + 4 * 4, 6)
    out = resize_pos_embed(pos, 1, (2, 8, 8))
    assert out.shape == (1, 1 + 128, 6) and torch.equal(out[:, 0], pos[:, 0])
    # an image table repeated over time: every time slice is the same
    grid = out[:, 1:].reshape(2, 64, 6)
    assert torch.allclose(grid[0], grid[1])


def test_strict_lists_every_problem_at_once_and_leaves_the_model_untouched():
    model = _image_model(num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _image_model(num_classes=9).state_dict()
    del state["proj.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(UsageError) as e:
        load_pretrained(model, state, strict=True)
    text = str(e.value)
    assert "missing (kept at init): proj.bias" in text and "unexpected (ignored): extra.weight" in text
    assert "dropped: head.weight" in text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_layout_names_the_known_ones():
    with pytest.raises(UsageError, match=r"no checkpoint layout ToyVideo knows \(native, reference\)"):
        load_pretrained(_image_model(), {"encoder.layer.0.weight": torch.zeros(1), "x": torch.zeros(2)})


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(UsageError, match=r"needs code to be unpickled.*GLOBAL posix.mkdir"):
        load_pretrained(_image_model(), str(path))
    assert not os.path.exists(marker)


def test_truncated_and_missing_files_give_clear_errors(tmp_path):
    path = tmp_path / "good.pth"
    save_checkpoint({"model_state": _image_model().state_dict()}, str(path))
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint_file(str(tmp_path / "cut.pth"))
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint_file(str(tmp_path / "nope.pth"))
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(UsageError, match="is not a PyTorch checkpoint"):
        load_checkpoint_file(str(tmp_path / "notes.txt"))


class _FailsHalfway:
    def __reduce__(self):
        raise RuntimeError("killed while writing")


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="killed while writing"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(1000), "bad": _FailsHalfway()}, path)
    assert load_checkpoint_file(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_cli_convert_and_inflate_write_native_checkpoints(tmp_path, capsys):
    src = tmp_path / "ref.pth"
    torch.save({"state_dict": to_reference(_image_model(num_classes=7).state_dict())}, src)
    dst = tmp_path / "native.pth"
    assert main(["convert", str(src), str(dst), "--model", "toy_video", "--num-frames", "1"]) == 0
    saved = load_checkpoint_file(str(dst))
    assert saved["num_classes"] == 7 and saved["layout"] == "reference"
    video = tmp_path / "video.safetensors"
    assert main(["inflate", str(dst), str(video), "--model", "toy_video", "--num-frames", "4"]) == 0
    state = load_checkpoint_file(str(video))
    assert state["patch_embed.proj.weight"].shape == (16, 3, 3, 4, 4)
    assert "inflated (center, kt=3)  patch_embed.proj.weight" in capsys.readouterr().out
    assert main(["inflate", str(dst), str(video), "--model", "toy_video", "--num-frames", "1"]) == 2


@pytest.mark.parametrize("name, overrides, options", [
    ("poolformer_s12", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), {"head_norm": "post_pool"}),
    ("cvt_13", dict(embed_dims=(16, 24, 32), depths=(1, 1, 1), num_heads=(1, 2, 2)), {"act": "gelu"}),
])
def test_options_a_layout_implies_survive_a_native_round_trip(tmp_path, name, overrides, options):
    """A timm PoolFormer (head order) or HF CvT (activation) saved natively reloads computing the same thing."""
    torch.manual_seed(0)
    source = vidformer.create_model(name, num_frames=1, img_size=64, num_classes=5, **overrides).eval()
    source.apply_options(options)
    path = str(tmp_path / "native.pth")
    save_checkpoint({"model_state": source.state_dict(), "pretrained_cfg": vars(source.pretrained_cfg)}, path)
    fresh = vidformer.create_model(name, num_frames=1, img_size=64, num_classes=5, **overrides).eval()
    report = load_pretrained(fresh, path, strict=True)
    assert all(report.options[k] == v for k, v in options.items())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fresh(x), source(x), atol=1e-5)
