"""The flags every command shares, spelled and shown one way: -n/--num, --device auto,
--dtype, --sampler-option, several prompts, --lr, defaults shown once in every --help."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.cli import flags
from pixdiff.cli.main import build_parser, main
from pixdiff.cli.steering_flags import read_prompt_flags, steering
from pixdiff.images import make_grid
from pixdiff.training.runtime import resolve_device

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.threads=1", "--set", "optim.warmup_steps=1",
    "--set", "model.overrides.attention_resolutions=[8]", "--set", "text.width=16",
    "--set", "text.layers=1", "--set", "text.heads=2", "--set", "text.max_length=24",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded (tests/conftest.py)."""


@pytest.fixture(scope="module")
def text_run(captioned_folder, tmp_path_factory) -> Path:
    """A 2-step text-conditioned run (16x16, discrete linear schedule)."""
    out = tmp_path_factory.mktemp("runs") / "text"
    argv = ["train", "--data", str(captioned_folder), "--out", str(out), "--steps", "2"]
    assert main([*argv, *TINY]) == 0
    return out


def every_parser(parser=None, name="pixdiff"):
    """(name, parser) of pixdiff and of every subcommand below it."""
    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from every_parser(sub, f"{name} {sub_name}")


def option_helps(parser):
    """(action, its help as --help prints it) of every option with a help."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help not in (None, argparse.SUPPRESS) and action.option_strings:
            yield action, formatter._expand_help(action)


def test_every_help_shows_each_default_once_and_never_none():
    checked = 0
    for name, parser in every_parser():
        assert parser.formatter_class is flags.HelpFormatter, name
        for action, text in option_helps(parser):
            where = f"{name} {action.option_strings}: {text}"
            assert "(default: None)" not in text and text.lower().count("default") <= 1, where
            default = action.default
            if not (default in (None, False, argparse.SUPPRESS) or default == []):
                assert "default" in text.lower(), where  # a real default is shown
            checked += 1
    assert checked > 200
    train = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for shown in ("run.steps; default 10000", "optim.lr; default 0.0002", "run.precision;"):
        assert shown in " ".join(train.split()), shown


def test_device_defaults_to_auto_everywhere(monkeypatch):
    devices = {}
    for name, parser in every_parser():
        for action in parser._actions:
            if "--device" in action.option_strings:
                assert action.help.startswith(flags.DEVICE_HELP), name
                devices[name] = action.default
    assert devices["pixdiff sample"] == devices["pixdiff train-classifier"] == "auto"
    assert devices["pixdiff train"] is None  # the config's run.device, itself auto
    assert set(devices.values()) == {"auto", None} and len(devices) >= 9
    args = build_parser().parse_args(["sample"])
    assert args.device == ("cuda" if torch.cuda.is_available() else args.device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert flags.device("auto") == "mps" and resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert flags.device("auto") == "cpu" and resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("command", [["eval"], ["tune-grid", "RUN"]])
def test_n_is_num_everywhere_and_the_old_spelling_still_works(command, capsys):
    parser = build_parser()
    assert parser.parse_args([*command, "-n", "7"]).num == 7
    assert parser.parse_args([*command, "--num", "8"]).num == 8
    assert capsys.readouterr().err == ""
    assert parser.parse_args([*command, "--n", "9"]).num == 9
    assert "--n is deprecated; use -n/--num" in capsys.readouterr().err
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    assert "-n NUM, --num NUM" in sub.format_help() and "--n " not in sub.format_help()


def test_bench_samplers_help_mentions_only_its_own_flags():
    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    text = bench._subparsers._group_actions[0].choices["samplers"].format_help()
    assert "--prompt" not in text
    assert "--sampler-option KEY=VALUE" in text and "--dtype {fp32,bf16,fp16}" in text


def test_lr_sets_the_config_and_is_checked(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--lr", "5e-4", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["lr"] == 5e-4
    assert main(["train", "--out", str(tmp_path / "r"), "--lr", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr" in err and "optim.lr" in err


def test_several_prompts_expand_prompt_by_prompt(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# fruit\nred apple\n\n  blue car  \n# end\n")
    parser = build_parser()
    for argv in (["--prompt", "red apple", "--prompt", "blue car"], ["--prompts", str(prompts)]):
        args = parser.parse_args(["sample", "--cascade", *argv, "-n", "3"])
        read_prompt_flags(args)
        assert args.prompt == ["red apple", "blue car"]
        assert flags.image_count(args) == 6 and flags.several_prompts(args) == 3
        assert steering(args).prompts == ["red apple"] * 3 + ["blue car"] * 3
    args = parser.parse_args(["sample", "--prompt", "red apple", "-n", "3"])
    read_prompt_flags(args)
    assert steering(args).prompts == "red apple" and flags.several_prompts(args) is None


def pixels(out: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(out / f"{i:06d}.png"), dtype=np.int16)


def sample(run: Path, out: Path, *extra: str) -> int:
    argv = ["sample", str(run), "-n", "2", "--steps", "3", "--out", str(out), "--no-progress"]
    return main([*argv, *extra])


def test_sample_with_several_prompts_a_grid_row_each(text_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("red apple\n# a comment\n\nblue car\n")
    assert sample(text_run, tmp_path / "two", "--prompt", "red apple", "--prompt", "blue car") == 0
    assert sample(text_run, tmp_path / "file", "--prompts", str(prompts)) == 0
    assert sample(text_run, tmp_path / "car", "--prompt", "blue car", "--seed", "2") == 0
    assert sorted(p.name for p in (tmp_path / "two").glob("0*.png")) == [
        f"{i:06d}.png" for i in range(4)
    ]
    for i in range(4):
        assert np.array_equal(pixels(tmp_path / "two", i), pixels(tmp_path / "file", i))
    for i in (2, 3):  # the second prompt's images are its own run's, seeds 2 and 3
        assert np.abs(pixels(tmp_path / "two", i) - pixels(tmp_path / "car", i - 2)).max() <= 1
    h, w = make_grid(torch.zeros(4, 3, 16, 16), nrow=2).shape[-2:]  # 2 rows of 2
    width, height = Image.open(tmp_path / "two" / "grid.png").size  # (upscaled for viewing)
    assert width % w == 0 and width // w == height // h and height % h == 0
    capsys.readouterr()
    code = sample(text_run, tmp_path / "x", "--prompt", "a", "--prompts", str(prompts))
    assert code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert sample(text_run, tmp_path / "y", "--prompts", str(tmp_path / "none.txt")) == 2
    assert "--prompts" in capsys.readouterr().err


def test_sampler_options_and_dtype_reach_the_sampler(text_run, tmp_path, capsys):
    plain = ["--sampler", "heun", "--seed", "1"]
    assert sample(text_run, tmp_path / "a", *plain) == 0
    assert sample(text_run, tmp_path / "b", *plain, "--sampler-option", "s_churn=1") == 0
    assert not np.array_equal(pixels(tmp_path / "a", 0), pixels(tmp_path / "b", 0))
    assert sample(text_run, tmp_path / "c", *plain, "--dtype", "bf16") == 0
    settings = json.loads((tmp_path / "c" / "settings.json").read_text())
    assert settings["flags"]["dtype"] == "bf16"
    capsys.readouterr()
    assert sample(text_run, tmp_path / "d", *plain, "--sampler-option", "churn=1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no option 'churn'; its options: s_churn, s_tmin" in err
    assert sample(text_run, tmp_path / "e", "--eta", "0.5", "--sampler-option", "eta=0.5") == 2
    assert "give eta once" in capsys.readouterr().err


def test_eval_prints_the_variance_it_used(text_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", str(text_run), "--metrics", "bpd", "--bpd-n", "2", "--bpd-t-samples", "2"]
    assert main([*argv, "-n", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "variance  small" in printed and "None" not in printed
    assert json.loads(out.read_text())["metrics"]["bpd"]["variance"] == "small"


def test_bench_sampler_options_must_fit_every_swept_sampler(text_run, tmp_path, capsys):
    base = ["bench", "samplers", str(text_run), "-n", "2", "--nfe", "2", "--no-progress"]
    base += ["--reference-steps", "4", "--out", str(tmp_path / "b")]
    assert main([*base, "--samplers", "ddim,euler", "--sampler-option", "eta=0"]) == 2
    assert "sampler euler has no option 'eta'" in capsys.readouterr().err
    option = ["--sampler-option", "lower_order_final=false", "--dtype", "bf16"]
    assert main([*base, "--samplers", "dpmpp-2m", *option]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["sampler_options"] == {"lower_order_final": False}
    assert summary["dtype"] == "bf16"
