"""The command line's error policy, as a new user meets it: every bad file, key, value or flag exits 2
with one line that names it (and a close match where there is one); a bug is one line and exit 1,
with the traceback under --debug; weights that do not fit the model are refused unless --allow-partial."""


import pytest
import torch
import yaml

import vidformer
from vidformer.checkpoint import load_pretrained
from vidformer.cli import VERBS, _overrides, main, parse_args
from vidformer.errors import UsageError
from vidformer.models import create_model

TOY_CONFIG = """MODEL:
  MODEL_NAME: toy_video
  NUM_CLASSES: 5
DATA:
  NUM_FRAMES: 4
  TRAIN_CROP_SIZE: 32
  TEST_CROP_SIZE: 32
  TRAIN_JITTER_SCALES: [32, 40]
TEST:
  NUM_ENSEMBLE_VIEWS: 1
"""


def _fails(capsys, argv: list[str], *named: str) -> str:
    """Run the CLI in-process; it must exit 2 with an error line that names every string in `named`."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "error:" in line
    for name in named:
        assert name in line, line
    return line


@pytest.fixture
def toy(tmp_path):
    """A toy config and a checkpoint that fits it, and one of another width that does not."""
    (tmp_path / "toy.yaml").write_text(TOY_CONFIG)
    torch.manual_seed(0)
    torch.save(create_model("toy_video", num_classes=5, num_frames=4).state_dict(), tmp_path / "fits.pth")
    torch.save(create_model("toy_video", num_classes=5, num_frames=4, dim=8).state_dict(), tmp_path / "narrow.pth")
    return tmp_path


# ---------------------------------------------------------------- flags and verbs

@pytest.mark.parametrize("argv, named", [
    (["demo", "v.mp4", "--topk", "0"], ["--topk", "positive integer"]),
    (["demo", "v.mp4", "--topk", "-1"], ["--topk", "positive integer"]),
    (["flops", "toy_video", "--img-size", "-32"], ["--img-size", "-32"]),
    (["demo", "v.mp4", "--windows", "-2"], ["--windows", ">= 0"]),
    (["tran", "--config", "x.yaml"], ["'tran'", "did you mean 'train'?"]),
    (["inflate", "a", "b", "--model", "toy_video", "--num-frames", "4", "--method", "centre"],
     ["--method", "did you mean 'center'?"]),
    (["demo", "v.mp4", "--topK", "3"], ["--topK", "did you mean '--topk'?"]),
    (["flops", "mvitv2_ss"], ["unknown model 'mvitv2_ss'", "did you mean mvitv2_s"]),
])
def test_bad_flags_and_names_exit_2_naming_them(capsys, argv, named):
    _fails(capsys, argv, *named)


def test_version_and_seed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"vidformer {vidformer.__version__}"
    args = parse_args(["train", "--config", "c.yaml", "--seed", "7", "SOLVER.BASE_LR", "0.1"])
    assert _overrides(args) == ["SOLVER.BASE_LR", "0.1", "RNG_SEED", "7"]


@pytest.mark.parametrize("verb", ["train", "test"])
def test_compile_flag_sets_model_compile(verb):
    assert _overrides(parse_args([verb, "--config", "c.yaml", "--compile"])) == ["MODEL.COMPILE", "True"]


def test_overrides_are_accepted_anywhere_among_the_options():
    args = parse_args(["demo", "v.mp4", "TEST.BATCH_SIZE", "2", "--checkpoint", "w.pth", "DATA.NUM_FRAMES", "8",
                       "--topk", "3", "SOLVER.BASE_LR", "-0.5"])
    assert args.checkpoint == "w.pth" and args.topk == 3
    assert args.opts == ["TEST.BATCH_SIZE", "2", "DATA.NUM_FRAMES", "8", "SOLVER.BASE_LR", "-0.5"]
    args = parse_args(["test", "--config", "c.yaml", "--checkpoint", "w.pth", "TEST.NUM_SPATIAL_CROPS", "3"])
    assert args.opts == ["TEST.NUM_SPATIAL_CROPS", "3"]


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("text, overrides, named", [
    ("DATA:\n  NUM_FRAME: 8\n", [], ["unknown key 'DATA.NUM_FRAME'", "did you mean 'DATA.NUM_FRAMES'?"]),
    ("{}\n", ["TRAIN.BATCHSIZE", "4"], ["unknown key 'TRAIN.BATCHSIZE'", "did you mean 'TRAIN.BATCH_SIZE'?"]),
    ("{}\n", ["TRAIN.GRAD_ACCUM_STEPS", "0"], ["TRAIN.GRAD_ACCUM_STEPS is 0", ">= 1"]),
    ("{}\n", ["TRAIN.GRAD_ACCUM_STEPS", "-1"], ["TRAIN.GRAD_ACCUM_STEPS is -1"]),
    ("DATA:\n  NUM_FRAMES: -8\n", [], ["DATA.NUM_FRAMES is -8"]),
    ("MIXUP:\n  PROB: 1.5\n", [], ["MIXUP.PROB is 1.5", "between 0.0 and 1.0"]),
    ("MODEL:\n  COMPILE_BACKEND: tvm\n", [], ["MODEL.COMPILE_BACKEND is 'tvm'", "inductor, cudagraphs, aot_eager, eager"]),
    ("{}\n", ["MODEL.COMPILE_MODE", "fast"], ["MODEL.COMPILE_MODE is 'fast'", "default, reduce-overhead"]),
    ("{}\n", ["MODEL.COMPILE_BACKEND", "aot_eager", "MODEL.COMPILE_MODE", "max-autotune"],
     ["MODEL.COMPILE_MODE 'max-autotune' is a mode of the inductor backend", "MODEL.COMPILE_BACKEND 'aot_eager'"]),
])
def test_config_mistakes_name_the_key(capsys, tmp_path, text, overrides, named):
    (tmp_path / "c.yaml").write_text(text)
    _fails(capsys, ["config", str(tmp_path / "c.yaml"), *overrides], *named)


def test_a_directory_is_named_as_one(capsys, toy):
    _fails(capsys, ["config", str(toy)], f"'{toy}' is a directory")
    _fails(capsys, ["demo", str(toy), "--config", str(toy / "toy.yaml"), "--checkpoint", str(toy / "fits.pth")],
           f"video '{toy}' is a directory")


def test_output_dir_under_a_file_is_one_line(capsys, toy):
    (toy / "plain").write_text("not a folder")
    out = str(toy / "plain" / "run")
    line = _fails(capsys, ["train", "--config", str(toy / "toy.yaml"), "OUTPUT_DIR", out],
                  "OUTPUT_DIR", "which is a file")
    assert out in line
    _fails(capsys, ["test", "--config", str(toy / "toy.yaml"), "--checkpoint", str(toy / "fits.pth"),
                    "OUTPUT_DIR", str(toy / "plain")], "OUTPUT_DIR", "is a file")


def test_config_verb_prints_the_merged_config(capsys, toy):
    assert main(["config", str(toy / "toy.yaml"), "TRAIN.BATCH_SIZE", "3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["MODEL"]["MODEL_NAME"] == "toy_video" and cfg["TRAIN"]["BATCH_SIZE"] == 3
    assert cfg["SOLVER"]["OPTIMIZING_METHOD"] == "adamw"  # defaults are in the print too


# ---------------------------------------------------------------- videos and weights

def test_demo_videos_that_are_not_videos(capsys, toy):
    base = ["--config", str(toy / "toy.yaml"), "--checkpoint", str(toy / "fits.pth")]
    _fails(capsys, ["demo", str(toy / "nowhere.mp4"), *base], "nowhere.mp4", "does not exist")
    (toy / "notes.mp4").write_text("this is text, not H.264")
    _fails(capsys, ["demo", str(toy / "notes.mp4"), *base], "cannot decode", "notes.mp4")
    # an override after the options reaches the config (and a bad one is named)
    _fails(capsys, ["demo", str(toy / "notes.mp4"), *base, "TEST.NUM_ENSEMBLE_VIEWS", "0"], "TEST.NUM_ENSEMBLE_VIEWS")


def test_weights_that_do_not_fit_are_refused_unless_allow_partial(capsys, toy):
    narrow = str(toy / "narrow.pth")
    base = ["--config", str(toy / "toy.yaml"), "--checkpoint", narrow]
    _fails(capsys, ["demo", str(toy / "notes.mp4"), *base],
           "does not fit", "1 of 11 model tensors loaded (9%)", "--allow-partial")
    # accepted with the flag: the demo goes on to the video (which is missing)
    _fails(capsys, ["demo", str(toy / "nowhere.mp4"), *base, "--allow-partial"], "nowhere.mp4")

    dst = toy / "converted.pth"
    _fails(capsys, ["convert", narrow, str(dst), "--model", "toy_video", "--num-frames", "4"], "does not fit")
    assert not dst.exists()
    assert main(["convert", narrow, str(dst), "--model", "toy_video", "--num-frames", "4", "--allow-partial"]) == 0
    assert dst.exists() and "wrote" in capsys.readouterr().out
    fits = ["convert", str(toy / "fits.pth"), str(toy / "ok.pth"), "--model", "toy_video", "--num-frames", "4"]
    assert main(fits) == 0


def _tiny_mvit(depths, num_frames=4, num_classes=5):
    return create_model("mvitv2_s", num_classes=num_classes, num_frames=num_frames, img_size=32, depths=depths,
                        embed_dim=16, num_heads=1)


def test_another_size_of_the_family_does_not_fit_but_inflation_and_new_classes_do():
    small, large = _tiny_mvit((1, 1, 1, 1)).state_dict(), _tiny_mvit((1, 2, 3, 1)).state_dict()
    into_large = load_pretrained(_tiny_mvit((1, 2, 3, 1)), small)
    assert into_large.missing and into_large.fit()[0] < 0.9
    with pytest.raises(UsageError, match=r"does not fit the model: \d+ of \d+ model tensors loaded .*missing"):
        into_large.check_fit()
    into_large.check_fit(allow_partial=True)
    with pytest.raises(UsageError, match="of its keys are model keys"):  # half the file would be left over
        load_pretrained(_tiny_mvit((1, 1, 1, 1)), large)
    image = _tiny_mvit((1, 1, 1, 1), num_frames=1, num_classes=10).state_dict()
    inflated = load_pretrained(_tiny_mvit((1, 1, 1, 1)), image)  # new rel_pos_t tables, classifier dropped
    assert inflated.zeroed and inflated.dropped and min(inflated.fit()) > 0.95  # the image model has no cls_token
    inflated.check_fit()


# ---------------------------------------------------------------- bugs

def test_a_bug_is_one_line_and_debug_shows_its_traceback(capsys, monkeypatch):
    def broken(args):
        return 1 // 0

    help_text, add_arguments, _ = VERBS["flops"]
    monkeypatch.setitem(VERBS, "flops", (help_text, add_arguments, broken))
    assert main(["flops", "toy_video"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error: ZeroDivisionError" in err and "--debug" in err
    for argv in (["--debug", "flops", "toy_video"], ["flops", "toy_video", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "1 // 0" in err


def test_a_user_error_under_debug_also_shows_where(capsys, tmp_path):
    assert main(["--debug", "config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err and err.strip().endswith("expected a YAML file (see configs/)")


def test_a_path_the_system_refuses_is_named_and_memory_is_no_bug(capsys, monkeypatch):
    def unwritable(args):
        raise PermissionError(13, "Permission denied", "/runs/shared/out")

    def too_big(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    help_text, add_arguments, _ = VERBS["flops"]
    monkeypatch.setitem(VERBS, "flops", (help_text, add_arguments, unwritable))
    _fails(capsys, ["flops", "toy_video"], "'/runs/shared/out': Permission denied")
    monkeypatch.setitem(VERBS, "flops", (help_text, add_arguments, too_big))
    assert main(["flops", "toy_video"]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "TRAIN.BATCH_SIZE" in err and "bug" not in err


def test_a_checkpoint_directory_is_named_as_one(capsys, tmp_path):
    _fails(capsys, ["convert", str(tmp_path), str(tmp_path / "out.pth"), "--model", "toy_video"],
           f"checkpoint '{tmp_path}' is a directory")
