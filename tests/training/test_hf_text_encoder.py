"""A frozen Hugging Face text encoder from a local folder: a tiny random T5 encoder with a
word-level tokenizer, built offline, trained through --text-encoder, checkpointed (projection
only), loaded and sampled."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

import pixdiff
from pixdiff.checkpoint import read_tensors
from pixdiff.cli.main import main
from pixdiff.nets.hf_text import HFTextEncoder, check_encoder_dir

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["<pad>", "</s>", "<unk>", "red", "green", "blue", "yellow", "apple", "car", "star"]


def save_tiny_t5(folder: Path) -> Path:
    """A randomly initialised 1-layer T5 encoder and a word-level tokenizer that, like T5's,
    appends </s>; written with save_pretrained (safetensors + tokenizer.json)."""
    tok = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>")
    )
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = transformers.T5Config(
        d_model=32, d_kv=16, num_layers=1, num_heads=2, d_ff=64, vocab_size=len(WORDS)
    )
    torch.manual_seed(0)
    transformers.T5EncoderModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5(tmp_path_factory) -> Path:
    return save_tiny_t5(tmp_path_factory.mktemp("t5"))


def test_only_the_projection_is_a_parameter(t5):
    enc = HFTextEncoder(t5, width=16, max_length=4)
    assert set(enc.state_dict()) == {"proj.weight", "proj.bias"}
    assert [n for n, p in enc.named_parameters()] == ["proj.weight", "proj.bias"]
    cond = enc.encode(["red apple", "blue"])
    assert cond.context.shape == (2, 3, 16) and cond.pooled.shape == (2, 16)
    assert cond.context_mask.tolist() == [[True] * 3, [True, True, False]]
    assert copy.deepcopy(enc).frozen.module is enc.frozen.module  # the EMA copy shares it
    with pytest.warns(UserWarning, match="max_length=4") as record:
        enc.encode(["red apple car star", "green car star apple"])
    assert len(record) == 1


@pytest.mark.parametrize(
    "remove, named",
    [("model.safetensors", r"\*\.safetensors weights"), ("tokenizer.json", "tokenizer")],
)
def test_a_folder_missing_files_is_named(t5, tmp_path, remove, named):
    broken = Path(shutil.copytree(t5, tmp_path / "broken"))
    (broken / remove).unlink()
    with pytest.raises(FileNotFoundError, match=named) as err:
        check_encoder_dir(broken)
    assert "\n" not in str(err.value) and str(broken) in str(err.value)


def test_train_checkpoint_load_and_sample(t5, captioned_folder, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(captioned_folder), "--out", str(run), "--text-encoder", str(t5)]
    argv += ["--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--steps", "2"]
    argv += ["--no-progress", "--set", "run.sample_every=0", "--set", "run.threads=1"]
    argv += ["--set", "model.overrides.attention_resolutions=[8]", "--set", "text.width=16"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    stored = config["train"]["text"]["encoder"]  # relative to the run: they move together
    assert not Path(stored).is_absolute() and (run / stored).resolve() == t5.resolve()
    for name in ("model.safetensors", "ema.safetensors"):
        keys = read_tensors(run / name)[0]
        text_keys = {k for k in keys if k.startswith("text_encoder.")}
        assert text_keys == {"text_encoder.proj.weight", "text_encoder.proj.bias"}
    model = pixdiff.load(run)
    assert isinstance(model.text_encoder, HFTextEncoder)
    steering, sampling = pixdiff.Steering(prompts="red car"), pixdiff.Sampling(steps=2)
    x = pixdiff.generate(model, steering, sampling, n=2)
    assert torch.isfinite(x).all()
    out = tmp_path / "samples"
    flags = ["--prompt", "red car", "--guidance", "2", "--out", str(out), "--no-progress"]
    assert main(["sample", str(run), "-n", "2", "--steps", "2", *flags]) == 0
    assert (out / "000001.png").exists()
    (t5 / "config.json").rename(t5 / "moved.json")  # the run needs its encoder folder
    try:
        assert main(["sample", str(run), "--prompt", "red", "--out", str(out)]) == 2
        assert "lacks config.json" in capsys.readouterr().err
    finally:
        (t5 / "moved.json").rename(t5 / "config.json")


def test_a_run_and_its_encoder_move_together_and_a_missing_one_is_named(
    t5, captioned_folder, tmp_path, capsys
):
    """The encoder's folder is stored relative to the run: copying both keeps the run
    loadable; the run alone names the folder it looked for and how to fix it; a run from
    before (an absolute path) still loads."""
    home = tmp_path / "home"
    shutil.copytree(t5, home / "encoders" / "t5")
    run = home / "runs" / "r"
    argv = ["train", "--data", str(captioned_folder), "--out", str(run), "--steps", "1"]
    argv += ["--text-encoder", str(home / "encoders" / "t5"), "--preset", "unet-tiny"]
    argv += ["--batch-size", "8", "--image-size", "16", "--no-progress", "--set", "text.width=16"]
    argv += ["--set", "run.sample_every=0", "--set", "run.threads=1"]
    argv += ["--set", "model.overrides.attention_resolutions=[8]"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["text"]["encoder"] == str(Path("..", "..", "encoders", "t5"))
    moved = Path(shutil.copytree(home, tmp_path / "elsewhere"))
    shutil.rmtree(home / "encoders")
    assert isinstance(pixdiff.load(moved / "runs" / "r").text_encoder, HFTextEncoder)
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "red", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(home / "encoders" / "t5") in err
    assert "relative to the run directory" in err and "train.text.encoder" in err
    config["train"]["text"]["encoder"] = str(t5.resolve())  # as runs before stored it
    del config["checksum"]  # a hand edit (RELIABILITY.md)
    (run / "config.json").write_text(json.dumps(config))
    assert isinstance(pixdiff.load(run).text_encoder, HFTextEncoder)
