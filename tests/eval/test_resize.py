"""Fitting images to an extractor: TF 1.x and PIL-style bilinear resizing, channel conversion,
and every extractor taking images of any size."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pixdiff.eval import load_extractor
from pixdiff.eval.resize import channel_problem, convert_channels, fit_images, resize

ODD_SIZES = [((28, 28), (299, 299)), ((17, 23), (299, 299)), ((300, 301), (299, 299)),
             ((9, 13), (28, 28)), ((64, 32), (17, 40))]  # fmt: skip


def _rand(*shape, seed=0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_tf1_bilinear_by_hand():
    # TF 1.x, align_corners=False: source i * in / out, no half-pixel offset, edge clamped
    x = torch.tensor([0.0, 10.0]).reshape(1, 1, 1, 2)
    up = resize(x, (1, 4), mode="tf1-bilinear")
    assert up.flatten().tolist() == [0.0, 5.0, 10.0, 10.0]
    x = torch.arange(4.0).reshape(1, 1, 4, 1)
    down = resize(x, (2, 1), mode="tf1-bilinear")  # samples rows 0 and 2, no antialiasing
    assert down.flatten().tolist() == [0.0, 2.0]


@pytest.mark.parametrize(("size_in", "size_out"), ODD_SIZES)
def test_tf1_bilinear_equals_torch_fidelity(torch_fidelity, size_in, size_out):
    x = _rand(2, 3, *size_in) * 255
    theirs = torch_fidelity.interpolate.interpolate_bilinear_2d_like_tensorflow1x(
        x, size=size_out, align_corners=False
    )
    assert torch.equal(resize(x, size_out, mode="tf1-bilinear"), theirs)


@pytest.mark.parametrize(("size_in", "size_out"), ODD_SIZES)
def test_bilinear_matches_pil(size_in, size_out):
    """The default resize is PIL's BILINEAR (a triangle filter widened when shrinking)."""
    image = _rand(*size_in).numpy()
    pil = Image.fromarray(image, mode="F").resize(size_out[::-1], Image.BILINEAR)
    ours = resize(torch.from_numpy(image)[None, None], size_out)[0, 0]
    np.testing.assert_allclose(ours.numpy(), np.asarray(pil), atol=1e-4)


def test_same_size_is_untouched_and_constants_stay_constant():
    x = _rand(2, 3, 9, 13)
    assert resize(x, (9, 13)) is x and fit_images(x, (3, 9, 13)) is x
    const = torch.full((1, 1, 9, 13), 0.25)
    for mode in ("bilinear", "tf1-bilinear"):
        out = resize(const, (31, 7), mode=mode)
        torch.testing.assert_close(out, torch.full((1, 1, 31, 7), 0.25))


def test_channel_conversion():
    grey = _rand(2, 1, 5, 7)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (2, 3, 5, 7) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    assert channel_problem(3, 3) is None and channel_problem(1, 3) is None
    with pytest.raises(ValueError, match=r"takes 1-channel images, got \(2, 3, 5, 7\): colour"):
        convert_channels(rgb, 1)
    with pytest.raises(ValueError, match="4-channel images cannot be converted to 3 channels"):
        convert_channels(_rand(1, 4, 5, 7), 3)
    # resizing each channel alone: resize-then-repeat equals repeat-then-resize
    both = fit_images(grey, (3, 11, 3))
    torch.testing.assert_close(both, resize(grey.repeat(1, 3, 1, 1), (11, 3)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown resize 'nearest'"):
        resize(grey, (3, 3), mode="nearest")


def test_the_shipped_classifier_takes_any_size():
    extractor = load_extractor()
    x = _rand(3, 1, 17, 23) * 2 - 1
    expected = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True)
    torch.testing.assert_close(extractor.features(x), extractor.features(expected))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\), got \(3, 3, 17, 23\): colour"):
        extractor.features(x.repeat(1, 3, 1, 1))


class RGBNet(nn.Module):
    """(N, 3, 8, 8) -> (N, 5): a TorchScript extractor that needs RGB 8 x 8 input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 8, 8)
        return self.conv(x).mean(dim=(2, 3))


def test_a_torchscript_extractor_takes_any_size_and_grey(tmp_path):
    torch.manual_seed(0)
    net = RGBNet().eval()
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(tmp_path / "rgb.pt"))
    extractor = load_extractor(str(tmp_path / "rgb.pt"), input_shape=(3, 8, 8))
    grey = _rand(4, 1, 5, 11) * 2 - 1  # smaller, not square, one channel
    fitted = F.interpolate(grey, size=(8, 8), mode="bilinear", antialias=True).repeat(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(extractor.features(grey), net(fitted).double())
