"""The noise-conditional classifier: network, training, save/load, `pixdiff train-classifier`."""

import json

import pytest
import torch

from pixdiff.checkpoint import CheckpointError
from pixdiff.classifier_store import load_noisy_classifier, save_noisy_classifier
from pixdiff.cli.main import build_parser, main
from pixdiff.conditioning import Cond
from pixdiff.data import ImageSet, to_model_space
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import ClassifierGuidance
from pixdiff.nets.noisy_classifier import NoisyClassifierConfig, NoisyClassifierNet
from pixdiff.schedule_registry import get_schedule
from pixdiff.schedules import q_sample
from pixdiff.training import noisy_classifier as classifier_training
from pixdiff.training.noisy_classifier import (
    ClassifierError,
    build_classifier,
    train_noisy_classifier,
)


def stripes(n: int = 96) -> ImageSet:
    """8x8 grey images in 3 classes: horizontal stripes, vertical stripes, flat grey."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    rows = (torch.arange(8) % 2 * 200 + 20).float()
    flat = torch.full((8, 8), 120.0)
    base = torch.stack([rows[:, None].expand(8, 8), rows[None, :].expand(8, 8), flat])
    images = base[labels][:, None] + 15 * torch.randn(n, 1, 8, 8, generator=g)
    names = ["horizontal", "vertical", "flat"]
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels, names, name="stripes")


def test_net_gives_logits_per_sample_and_noise_level():
    net = NoisyClassifierNet(NoisyClassifierConfig(in_channels=3, image_size=16, num_classes=5))
    logits = net(torch.randn(4, 3, 16, 16), torch.tensor([0.0, 10.0, 500.0, 999.0]))
    assert logits.shape == (4, 5)
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 3, H, W\)"):
        net(torch.randn(4, 1, 16, 16), 0.0)


def test_training_learns_the_classes_at_low_noise():
    data = stripes()
    clf, loss = train_noisy_classifier(
        data, get_schedule("cosine"), steps=60, batch_size=24, lr=3e-3, seed=0
    )
    x0 = to_model_space(data.images)
    t = torch.full((len(x0),), 0.1, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x_t = q_sample(clf.schedule, x0, t, noise)
    accuracy = (clf(x_t, t).argmax(1) == data.labels).float().mean().item()
    assert accuracy > 0.9, (accuracy, loss)
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())


def test_a_non_finite_loss_stops_training_with_a_classifier_error(monkeypatch):
    nan = lambda *args: torch.tensor(float("nan"), requires_grad=True)  # noqa: E731
    monkeypatch.setattr(classifier_training, "classifier_loss", nan)
    with pytest.raises(ClassifierError, match="classifier loss became nan at step 1"):
        train_noisy_classifier(stripes(), get_schedule("cosine"), steps=2, batch_size=24)


def test_save_load_round_trip(tmp_path):
    clf = build_classifier(stripes(), get_schedule("flow"), seed=3)
    save_noisy_classifier(clf, tmp_path / "c", metadata={"note": "x"})
    back = load_noisy_classifier(tmp_path / "c")
    x, t = torch.randn(5, 1, 8, 8), torch.rand(5, dtype=torch.float64)
    assert torch.equal(back(x, t), clf.eval()(x, t))
    assert back.schedule == get_schedule("flow") and back.class_names == stripes().class_names
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    del config["checksum"]  # how a hand edit is accepted (RELIABILITY.md)
    config["net"]["chanels"] = [8]
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="chanels"):
        load_noisy_classifier(tmp_path / "c")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_noisy_classifier(tmp_path / "nowhere")


def test_a_trained_classifier_guides_an_image_denoiser():
    clf = build_classifier(stripes(), get_schedule("cosine"), seed=0)
    den = Denoiser(lambda x, c: 0.5 * x, get_schedule("linear"), "eps")
    guided = ClassifierGuidance(den, clf, scale=2.0, model_cond=False)
    x = torch.randn(3, 1, 8, 8)
    out = guided(x, 0.5, Cond(label=torch.tensor([0, 1, 2])))
    assert torch.isfinite(out.x0).all() and not torch.equal(out.eps, den(x, 0.5).eps)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 8x8 stripe images with a metadata.jsonl of class names."""
    from PIL import Image

    root = tmp_path_factory.mktemp("stripes")
    data = stripes(12)
    with (root / "metadata.jsonl").open("w") as f:
        for i, (img, label) in enumerate(zip(data.images, data.labels, strict=True)):
            Image.fromarray(img[0].numpy()).save(root / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "label": data.class_names[label]}) + "\n")
    return root


def test_train_classifier_cli_writes_and_loads_back(folder, tmp_path, capsys):
    out = tmp_path / "clf"
    args = ["train-classifier", "--data", str(folder), "--image-size", "8", "--out", str(out)]
    args += ["--steps", "3", "--batch-size", "4", "--schedule", "linear", "--no-progress"]
    assert main([*args, "--log-every", "2"]) == 0
    stdout = capsys.readouterr().out
    assert "classifier saved" in stdout
    lines = [ln.split() for ln in stdout.splitlines() if ln.startswith("train-classifier step=")]
    assert [ln[1:3] for ln in lines] == [["step=2/3", "images=8"], ["step=3/3", "images=12"]]
    final = float(stdout.split("(final loss ")[1].rstrip(")\n"))
    assert f"{float(lines[-1][3].removeprefix('loss=')):.4f}" == f"{final:.4f}"
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    clf = load_noisy_classifier(out)
    assert clf.num_classes == 3 and clf.net.config.in_channels == 3  # folders load as RGB
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_train_classifier_help_documents_every_flag():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices["train-classifier"]
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.dest
        assert all(opt in text for opt in action.option_strings)
