"""``pixdiff convert-inception`` and ``pixdiff eval --extractor inception --weights FILE`` on the
shipped Fashion-MNIST model, with random Inception weights (the released ones are not here):
the grey 28 x 28 samples and real images are resized to 299 x 299 RGB by the extractor."""

import json

import pytest
import torch

from pixdiff.cli.main import main
from pixdiff.eval.inception import FIDInceptionV3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "random.pth")
    return tmp_path / "random.pth"


def test_convert_then_eval_with_inception(tmp_path, weights, image_folder, monkeypatch, capsys):
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "inception.safetensors"
    assert main(["convert-inception", str(weights), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "not the released file" in printed
    data = image_folder(tmp_path / "real", 4, 28, ["x"])  # 4 real images, resized by the extractor
    argv = ["eval", "--extractor", "inception", "--weights", str(out), "--metrics", "kid,pr"]
    argv += ["-n", "4", "--steps", "2", "--data", str(data), "--split", "train"]
    argv += ["--batch-size", "4", "--no-progress", "--out", str(tmp_path / "eval.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    samples = result["metrics"]["samples"]
    assert result["extractor"] == "inception" and samples["n"] == 4
    assert 0 <= samples["precision"] <= 1 and samples["kid"] == pytest.approx(samples["kid"])
    (cached,) = (tmp_path / "cache" / "reference-stats").glob("*.safetensors")
    assert "inception-" in cached.name and "3x299x299-from1x28x28" in cached.name


def test_bad_weights_are_one_line(tmp_path, weights, capsys):
    (tmp_path / "notes.pth").write_text("not weights")
    base = ["eval", "--metrics", "kid", "-n", "4", "--steps", "2", "--no-progress"]
    for extra, message in [
        (["--extractor", "inception", "--weights", str(tmp_path / "notes.pth")],
         f"{tmp_path / 'notes.pth'} is not a PyTorch state dict"),
        (["--extractor", "inception", "--weights", str(tmp_path / "absent.pth")],
         f"Inception weights file {tmp_path / 'absent.pth'} does not exist"),
        (["--weights", str(weights)], "weights are given only to the 'inception' extractor"),
    ]:  # fmt: skip
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["convert-inception", str(tmp_path / "notes.pth"), "--out", "x"]) == 2
    assert "is not a PyTorch state dict" in capsys.readouterr().err
