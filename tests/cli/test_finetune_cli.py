"""LoRA, DreamBooth and Diffusion-DPO from the CLI on tiny runs (issue #19): finetune (LoRA and
full), resume, merge, align; a LoRA refuses another base; bad input gets one line."""

import json
import math
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff.checkpoint import read_tensors
from pixdiff.cli.lora_flags import with_loras
from pixdiff.cli.main import main
from pixdiff.loras import LORA, apply_loras, read_lora

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--no-progress",
    "--set", "run.threads=1", "--set", "optim.warmup_steps=1",
    "--set", "model.overrides.attention_resolutions=[8]", "--set", "text.width=16",
    "--set", "text.layers=1", "--set", "text.heads=2", "--set", "text.max_length=24",
    "--set", "run.sample_every=0",
]  # fmt: skip
QUICK = ["--batch-size", "4", "--no-progress", "--sample-every", "0", "--device", "cpu"]


def finetune(base: Path, out: Path, *extra) -> int:
    return main(["finetune", str(base), "--out", str(out), *QUICK, *map(str, extra)])


@pytest.fixture(scope="module")
def runs(captioned_folder, tmp_path_factory, one_thread) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    paths = {k: root / k for k in ("base", "other", "lora", "subject")}
    for name, seed in (("base", "0"), ("other", "1")):
        argv = ["train", "--data", str(captioned_folder), "--out", str(paths[name]), *TINY]
        assert main([*argv, "--steps", "1", "--seed", seed]) == 0
    subject = paths["subject"]
    subject.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            subject / f"{i}.png"
        )
    assert finetune(paths["base"], paths["lora"], "--data", subject, "--lora-rank", "2",
                    "--steps", "2", "--instance-prompt", "a sks emoji", "--class-prompt",
                    "an emoji", "--prior-images", "4", "--sample-every", "2") == 0  # fmt: skip
    paths["data"] = captioned_folder
    return paths


def test_lora_run_holds_adapters_with_base_identity_and_samples(runs, tmp_path):
    lora = runs["lora"]
    config = json.loads((lora / "config.json").read_text())
    tensors, meta = read_tensors(lora / "lora.safetensors")
    section = json.loads(meta[LORA])
    assert section["rank"] == 2 and section["base_sha256"] == config[LORA]["base_sha256"]
    assert all(k.startswith("layers.") for k in tensors)
    assert any(v.abs().sum() > 0 for k, v in tensors.items() if k.endswith("up.weight"))
    assert (lora / "prior.safetensors").is_file()
    assert sorted(p.name for p in (lora / "samples").iterdir()) == [
        "step_0000000.png", "step_0000002.png",
    ]  # fmt: skip
    # the model loads with its base and the adapters (pixdiff.load and the CLI)
    model = pixdiff.load(lora)
    x = model.generate(prompts="a sks emoji", n=1, steps=2, output="tensor")
    assert x.shape == (1, 3, 16, 16)
    out = tmp_path / "s"
    assert main(["sample", str(lora), "--prompt", "a sks emoji", "-n", "1", "--steps", "2",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip


def test_merge_equals_base_plus_lora(runs, tmp_path):
    merged = tmp_path / "merged"
    assert main(["lora", "merge", str(runs["lora"]), "--out", str(merged),
                 "--lora-scale", "0.5"]) == 0  # fmt: skip
    a = pixdiff.load(merged)
    b = pixdiff.load(runs["base"])
    apply_loras(b, [runs["lora"]], scales=[0.5])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.4, 0.8])
    cond = b.net.encode(["a sks emoji", "an emoji"])
    torch.testing.assert_close(a.net(x, t, cond), b.net(x, t, cond), rtol=1e-5, atol=1e-5)


def test_lora_refuses_another_base(runs):
    other = pixdiff.load(runs["other"])
    with pytest.raises(ValueError, match=r"trained on the base .*base.* not on .*other"):
        apply_loras(other, [runs["lora"]])


def test_resume_continues_and_full_finetune_is_a_normal_run(runs, tmp_path):
    out = tmp_path / "full"
    common = ["--data", runs["data"], "--full", "--seed", "3"]
    assert finetune(runs["base"], out, *common, "--steps", "1") == 0
    assert finetune(runs["base"], out, "--resume", "--steps", "2") == 0
    once = tmp_path / "once"
    assert finetune(runs["base"], once, *common, "--steps", "2") == 0
    a, b = (read_tensors(p / "model.safetensors")[0] for p in (out, once))
    assert all(torch.equal(a[k], b[k]) for k in a)  # resume is exact
    assert pixdiff.load(out).generate(prompts="red apple", n=1, steps=2, output="tensor").shape == (
        1,
        3,
        16,
        16,
    )


def test_align_round_trip_and_bad_pairs(runs, tmp_path, capsys):
    folder = runs["data"]
    pairs = tmp_path / "pairs.jsonl"
    lines = [{"prompt": "red apple", "chosen": str(folder / "0.png"),
              "rejected": str(folder / "1.png")}] * 2  # fmt: skip
    pairs.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    out = tmp_path / "aligned"
    argv = ["align", str(runs["base"]), "--out", str(out), "--pairs", str(pairs), *QUICK]
    assert main([*argv, "--steps", "2", "--lora-rank", "2", "--beta", "100"]) == 0
    assert read_lora(out, pixdiff.load(runs["base"]).net)[1]["rank"] == 2
    # step 1: the model is its reference (B = 0), so the loss is exactly log 2
    first = (out / "log.csv").read_text().splitlines()[1].split(",")
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert float(first[header.index("loss")]) == pytest.approx(math.log(2), abs=1e-6)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + "\n" + '{"prompt": "x", "chosen": "a.png"}\n')
    assert main(["align", str(runs["base"]), "--out", str(tmp_path / "b"), "--pairs", str(bad),
                 *QUICK]) == 2  # fmt: skip
    assert f"{bad}:2: malformed pair" in capsys.readouterr().err
    bad.write_text('{"prompt": "x", "chosen": "missing.png", "rejected": "m.png"}\n')
    assert main(["align", str(runs["base"]), "--out", str(tmp_path / "b"), "--pairs", str(bad),
                 *QUICK]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"{bad}:1: image" in err and "missing.png" in err
    assert not (tmp_path / "b").exists()


def test_bad_input_is_one_line(runs, tmp_path, capsys):
    base = runs["base"]
    assert finetune(base, base, "--data", runs["data"]) == 2
    assert "is the base run" in capsys.readouterr().err
    assert finetune(base, tmp_path / "r", "--data", runs["data"], "--lora-rank", "0") == 2
    assert finetune(base, tmp_path / "r", "--data", runs["data"], "--lora-rank", "999") == 2
    assert "--lora-rank 999 for" in capsys.readouterr().err
    assert finetune(base, tmp_path / "r", "--data", runs["data"], "--lora-targets", "zzz") == 2
    assert "'zzz' matches no" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(runs["subject"], broken)
    (broken / "1.png").write_bytes(b"not a png")
    assert finetune(base, tmp_path / "r", "--data", broken, "--instance-prompt", "a sks") == 2
    assert "1.png" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


class Brightness(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def test_make_pairs_ranks_by_the_scorer_and_feeds_align(runs, tmp_path):
    scorer = tmp_path / "bright.pt"
    torch.jit.save(torch.jit.script(Brightness()), str(scorer))
    out = tmp_path / "pairs"
    argv = ["make-pairs", str(runs["base"]), "--scorer", str(scorer), "-k", "4", "--out",
            str(out), "--prompt", "red apple", "--prompt", "blue car", "--steps", "2"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["prompt"] for r in rows} == {"red apple", "blue car"}

    def bright(name):
        return np.asarray(Image.open(out / name), dtype=float).mean()

    assert all(bright(r["chosen"]) >= bright(r["rejected"]) for r in rows)
    aligned = tmp_path / "aligned"
    assert main(["align", str(runs["base"]), "--out", str(aligned), "--pairs",
                 str(out / "pairs.jsonl"), "--steps", "1", "--full", *QUICK]) == 0  # fmt: skip
    assert pixdiff.load(aligned).generate(prompts="blue car", n=1, steps=2, output="tensor").shape


def test_lora_scale_sets_the_strength(runs, tmp_path):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.6])

    def output(*scales, run=runs["base"], lora=(runs["lora"],)):
        args = Namespace(run=str(run), lora=[str(p) for p in lora], lora_scale=list(scales))
        model = with_loras(args, pixdiff.load(run), ema=True, device="cpu")
        return model.net(x, t, model.net.encode(["a sks emoji"] * 2))

    base = output(lora=())
    assert torch.equal(output(0.0), base)
    assert not torch.allclose(output(1.0), base)
    # a LoRA run given as RUN takes the first scale; stacked, each its own
    assert torch.equal(output(0.0, run=runs["lora"], lora=()), base)
    torch.testing.assert_close(output(1.0, 0.0, run=runs["lora"]), output(1.0))
    out = tmp_path / "s"
    argv = ["sample", str(runs["base"]), "--prompt", "red apple", "-n", "1", "--steps", "2",
            "--out", str(out), "--no-progress", "--lora", str(runs["lora"]),
            "--lora-scale", "0.5"]  # fmt: skip
    assert main(argv) == 0 and (out / "grid.png").is_file()


def test_a_stopped_finetune_keeps_its_run_for_resume(runs, tmp_path, monkeypatch):
    from pixdiff.training.finetune import Job

    out = tmp_path / "stopped"

    def stop(self, loss_fn, batch):
        raise KeyboardInterrupt("stopped")

    with monkeypatch.context() as m:
        m.setattr(Job, "train_step", stop)
        assert finetune(runs["base"], out, "--data", runs["subject"], "--instance-prompt",
                        "a sks emoji", "--class-prompt", "an emoji", "--prior-images", "2",
                        "--steps", "1") != 0  # fmt: skip
    assert (out / "train_state.safetensors").is_file() and (out / "prior.safetensors").is_file()
    prior = read_tensors(out / "prior.safetensors")[0]["images"]
    assert finetune(runs["base"], out, "--resume") == 0
    assert torch.equal(read_tensors(out / "prior.safetensors")[0]["images"], prior)
    assert json.loads((out / "config.json").read_text())["finetune"]["class_prompt"] == "an emoji"


def test_align_a_class_model_by_class_names(image_folder, tmp_path, capsys):
    folder = image_folder(tmp_path / "labelled", 8, 16, ["cat", "dog"])
    base = tmp_path / "classes"
    argv = ["train", "--data", str(folder), "--out", str(base), *TINY, "--steps", "1"]
    assert main(argv) == 0
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"class": "dog", "chosen": str(folder / "0.png"), "rejected": str(folder / "1.png")},
        {"class": 0, "chosen": str(folder / "2.png"), "rejected": str(folder / "3.png")},
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "aligned"
    argv = ["align", str(base), "--out", str(out), "--pairs", str(pairs), *QUICK]
    assert main([*argv, "--steps", "1", "--lora-rank", "2"]) == 0
    assert pixdiff.load(out).generate(classes="cat", n=1, steps=2, output="tensor").shape
    pairs.write_text(json.dumps({**rows[0], "class": "bird"}) + "\n")
    assert main(["align", str(base), "--out", str(tmp_path / "b"), "--pairs", str(pairs),
                 *QUICK]) == 2  # fmt: skip
    assert f"{pairs}:1: unknown class 'bird'" in capsys.readouterr().err
