"""The README is a checked document: every `vidformer ...` command in it parses with the CLI's own
parser (and the configs/ files it names exist), every `python tools/X.py` exists, the verbs it says
have a tools/ script have one, and the Models table's own figures are what `vidformer flops` prints
(the cheap rows here, DVT marked slow; the full-size video MViTv2/UniFormer counts are in the family tests)."""

import os
import re
import shlex

import pytest

from vidformer.cli import build_parser, parse_args
from vidformer.flops import model_flops
from vidformer.models import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def _shell_commands() -> list[str]:
    """Commands of the ```bash blocks: continuations joined, comments dropped, `a && b` split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def _inline_commands() -> list[str]:
    """`vidformer ...` code spans in the prose and tables."""
    return [c.replace("\\|", "|") for c in re.findall(r"`(vidformer [^`]+)`", README)]


def _cli_argv(command: str) -> list[str] | None:
    """The argv after `vidformer` (also under torchrun/srun), with the README's [optional] and a|b
    notation resolved to one concrete choice; None for a command that is not vidformer's."""
    command = command.replace("$(which vidformer)", "vidformer")
    tokens = shlex.split(command.replace("[", " ").replace("]", " "))
    if "vidformer" not in tokens:
        return None
    argv = tokens[tokens.index("vidformer") + 1:]
    # a single capital letter stands for a number (--num-frames T, --windows N)
    return ["4" if re.fullmatch(r"[A-Z]", t) else t.split("|")[0] for t in argv if t not in ("...", "…")]


def _commands_of(kind: str) -> list[str]:
    return _shell_commands() if kind == "shell" else _inline_commands()


@pytest.mark.parametrize("kind", ["shell", "inline"])
def test_every_vidformer_command_parses(kind):
    commands = [c for c in _commands_of(kind) if _cli_argv(c) is not None]
    assert len(commands) >= 5
    parser = build_parser()
    for command in commands:
        argv = _cli_argv(command)
        try:
            args = parse_args(argv, parser)
        except SystemExit as e:
            if argv == ["--version"] and e.code == 0:
                continue
            pytest.fail(f"README command does not parse: {command}")
        assert args.verb, command
        config = getattr(args, "config", None) or ""
        assert not config.startswith("configs/") or os.path.isfile(os.path.join(ROOT, config)), command


def test_every_tools_script_exists():
    scripts = [s for s in re.findall(r"python3? (tools/[\w/]+\.py)", README) if s != "tools/VERB.py"]
    assert scripts
    for script in scripts:
        assert os.path.isfile(os.path.join(ROOT, script)), script


def test_the_verbs_said_to_have_a_tools_script_have_one():
    sentence = re.search(r"((?:`\w+`, )+`\w+` and `\w+`) are also `python tools/VERB\.py", README)
    assert sentence, "the Command line section names the verbs that have a tools/VERB.py"
    verbs = re.findall(r"`(\w+)`", sentence[1])
    for verb in verbs:
        text = open(os.path.join(ROOT, "tools", f"{verb}.py")).read()
        assert f'main(["{verb}", *sys.argv[1:]])' in text, verb


def _models_row(first_cells: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| {first_cells} |")]
    assert len(rows) == 1, first_cells
    return rows[0]


# (row's first two cells, model, frames, crop, classes): ImageNet rows count 1000 classes, video rows 400
CHEAP = [
    ("`poolformer_s12` / `s24` / `s36` | ImageNet, 224", "poolformer_s12", 1, 224, 1000),
    ("`mvitv2_t` / `_s` / `_b` | ImageNet, 224", "mvitv2_t", 1, 224, 1000),
    ("`uniformer_s` / `_b` | ImageNet, 224", "uniformer_s", 1, 224, 1000),
    ("`cvt_13` / `cvt_21` | ImageNet, 224", "cvt_13", 1, 224, 1000),
]
SLOW = [
    ("`dvt_deit_s` | ImageNet, 224, 3 exits", "dvt_deit_s", 1, 224, 1000),
    ("`dvt_deit_s` | video 8x224, feature reuse", "dvt_deit_s", 8, 224, 400),
]


@pytest.mark.parametrize("row, name, frames, crop, classes",
                         CHEAP + [pytest.param(*case, marks=pytest.mark.slow) for case in SLOW])
def test_models_table_figures_are_what_vidformer_flops_prints(row, name, frames, crop, classes):
    model = create_model(name, num_classes=classes, num_frames=frames, img_size=crop)
    report = model_flops(model, frames, crop)
    text = _models_row(row)
    assert f"{report.params_m:.2f}" in text, (row, f"{report.params_m:.2f} M")
    assert f"{report.gflops:.2f}" in text, (row, f"{report.gflops:.2f} GFLOPs")
