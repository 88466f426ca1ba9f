"""Text conditioning end to end: train on a captioned folder from the CLI, checkpoint, load with
pixdiff.load, sample with --prompt; prompt dropout; one-line errors for mismatched flags."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff.checkpoint import read_tensors
from pixdiff.cli.main import main
from pixdiff.config import TextConfig, TrainConfig
from pixdiff.data import ImageSet
from pixdiff.nets.text import TextEncoder
from pixdiff.training.batch_inputs import uses_text
from pixdiff.training.losses import drop_prompts

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--no-progress",
    "--set", "run.threads=1", "--set", "optim.warmup_steps=1", "--set", "optim.lr=1e-3",
    "--set", "model.overrides.attention_resolutions=[8]", "--set", "text.width=16",
    "--set", "text.layers=1", "--set", "text.heads=2", "--set", "text.max_length=24",
]  # fmt: skip


def train(folder: Path, out: Path, *extra: str) -> None:
    assert main(["train", "--data", str(folder), "--out", str(out), *TINY, *extra]) == 0


@pytest.fixture(scope="module")
def runs(captioned_folder, tmp_path_factory) -> dict[str, Path]:
    """A text-conditioned run (4 steps: zero-init layers pass no gradient to the encoder
    before step 3; a sample grid at step 4) and a class-conditional one on
    the same folder (text.enabled=false: its labels instead of its captions)."""
    root = tmp_path_factory.mktemp("runs")
    train(captioned_folder, root / "text", "--steps", "4", "--set", "run.sample_every=4")
    train(captioned_folder, root / "class", "--steps", "1", "--set", "text.enabled=false")
    return {"text": root / "text", "class": root / "class"}


def sample(run: Path, out: Path, *flags: str) -> int:
    argv = ["sample", str(run), "-n", "2", "--steps", "2", "--out", str(out), "--no-progress"]
    return main([*argv, *flags])


def test_text_run_checkpoints_the_encoder_and_loads(runs):
    config = json.loads((runs["text"] / "config.json").read_text())
    assert config["text_conditioned"] and config["net"]["context_dim"] == 16
    assert config["net"]["pooled_dim"] == 16 and config["net"]["num_classes"] == 0
    for name in ("model.safetensors", "ema.safetensors"):
        keys = read_tensors(runs["text"] / name)[0].keys()
        assert "text_encoder.token_embed.weight" in keys and "net.out.2.weight" in keys
    assert (runs["text"] / "samples" / "step_0000004.png").exists()  # one row per caption
    model = pixdiff.load(runs["text"])
    assert isinstance(model.text_encoder, TextEncoder) and model.num_classes == 0
    ema, raw = model.text_encoder.token_embed.weight, pixdiff.load(runs["text"], ema=False)
    assert not torch.equal(ema, raw.text_encoder.token_embed.weight)  # EMA of the encoder too

    def images(prompts, guidance=1.0):
        steering = pixdiff.Steering(prompts=prompts, guidance=guidance)
        return pixdiff.generate(model, steering, pixdiff.Sampling(steps=2), n=2)

    apple = images("red apple")
    assert apple.shape == (2, 3, 16, 16) and torch.isfinite(apple).all()
    assert not torch.allclose(apple, images("blue car"))
    assert not torch.allclose(apple, images("red apple", guidance=3.0))
    # per-sample seeds, and padding to the longer prompt of the batch changes nothing
    assert torch.allclose(images(["red apple", "blue car"])[1], images("blue car")[1], rtol=1e-4)


def test_sample_cli_with_prompt_and_negative_prompt(runs, tmp_path):
    flags = ["--prompt", "red apple", "--negative-prompt", "blue car", "--guidance", "3"]
    assert sample(runs["text"], tmp_path / "a", *flags) == 0
    assert sorted(p.name for p in (tmp_path / "a").glob("0*.png")) == ["000000.png", "000001.png"]
    assert Image.open(tmp_path / "a" / "000000.png").size == (16, 16)
    assert sample(runs["text"], tmp_path / "b") == 0  # no prompt: the empty prompt


def test_class_run_ignores_captions_when_text_is_disabled(runs):
    config = json.loads((runs["class"] / "config.json").read_text())
    assert not config["text_conditioned"] and config["net"]["num_classes"] == 2
    assert config["net"]["context_dim"] == 0


def test_mismatched_flags_are_one_line_errors(runs, captioned_folder, tmp_path, capsys):
    def error(*argv) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.splitlines()[-1]  # after any progress bar
        assert err.startswith(f"pixdiff {argv[0]}: error:"), err
        return err

    assert "text-conditioned: use --prompt" in error(
        "sample", str(runs["text"]), "--class", "0", "--out", str(tmp_path)
    )
    assert "--negative-class" in error(
        "sample", str(runs["text"]), "--negative-class", "0", "--out", str(tmp_path)
    )
    err = error("sample", str(runs["class"]), "--prompt", "red apple", "--out", str(tmp_path))
    assert "--prompt need(s) a text-conditioned model" in err and "use --class" in err
    err = error("sample", str(runs["text"]), "--guidance", "3", "--out", str(tmp_path))
    assert "--prompt TEXT" in err
    out = str(tmp_path / "r")
    data = str(captioned_folder)
    err = error("train", "--data", data, "--out", out, "--text-encoder", "/nowhere/t5")
    assert "/nowhere/t5" in err and "does not exist" in err


def test_prompt_dropout_uses_the_empty_prompt_and_the_generator():
    prompts = [f"p{i}" for i in range(200)]
    assert drop_prompts(prompts, 0.0, torch.Generator().manual_seed(0)) == prompts
    a = drop_prompts(prompts, 0.3, torch.Generator().manual_seed(0))
    assert a == drop_prompts(prompts, 0.3, torch.Generator().manual_seed(0))
    kept = [p for p in a if p]
    assert 0.6 < len(kept) / len(a) < 0.8 and kept == [p for p in prompts if p in kept]


def test_a_text_encoder_without_captions_is_an_error():
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    data = ImageSet(images, labels=torch.zeros(4, dtype=torch.long), name="labelled")
    cfg = TrainConfig(text=TextConfig(encoder="/models/t5"))
    with pytest.raises(ValueError, match="'labelled' has no captions"):
        uses_text(cfg, data)
    captioned = ImageSet(images, captions=["a"] * 4)
    assert uses_text(TrainConfig(), captioned)
    assert not uses_text(TrainConfig(text=TextConfig(enabled=False)), captioned)


def test_generate_refuses_mismatched_conditions(runs):
    text, labelled = pixdiff.load(runs["text"]), pixdiff.load(runs["class"])

    def draw(model, **kwargs):
        steering = pixdiff.Steering(**kwargs)
        return pixdiff.generate(model, steering, pixdiff.Sampling(steps=1), n=2)

    with pytest.raises(ValueError, match="text-conditioned: use --prompt"):
        draw(text, classes=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="need 2 prompts"):
        draw(text, prompts=["red apple"])
    with pytest.raises(ValueError, match=r"need\(s\) a text-conditioned model"):
        draw(labelled, prompts="red apple")


def test_eval_bits_per_dim_of_a_text_run_uses_the_empty_prompt(runs, captioned_folder, tmp_path):
    out = tmp_path / "bpd.json"
    argv = ["eval", str(runs["text"]), "--metrics", "bpd", "--data", str(captioned_folder)]
    argv += ["--bpd-n", "2", "--bpd-t-samples", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert 0 < json.loads(out.read_text())["metrics"]["bpd"]["bpd"] < 20


def test_prompt_without_a_run_uses_the_shipped_text_model(runs, tmp_path, monkeypatch):
    from pixdiff import shipped

    monkeypatch.setitem(shipped.SHIPPED_RUNS, "emoji", runs["text"])
    monkeypatch.setitem(shipped.SHIPPED_RUNS, "fashion", tmp_path / "no-such-model")
    argv = ["sample", "-n", "1", "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, "--prompt", "red apple"]) == 0
    assert Image.open(tmp_path / "o" / "000000.png").size == (16, 16)
    assert main(argv) == 2  # no prompt: the (here missing) class-conditional model
