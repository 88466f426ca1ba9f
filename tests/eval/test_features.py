"""Feature extractors: the shipped classifier, classifier folders, TorchScript files, errors."""

import warnings

import pytest
import torch
from torch import nn

from pixdiff.eval import (
    FashionClassifier,
    FeatureExtractor,
    load_classifier,
    load_extractor,
    save_classifier,
)


@pytest.fixture(scope="module")
def shipped() -> FeatureExtractor:
    return load_extractor()


def _images(n: int, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=generator) * 2 - 1


class TinyNet(nn.Module):
    """A small network to script: (N, 3, 8, 8) -> (N, 5, 1, 1) pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu().mean(dim=(2, 3), keepdim=True)


def _script(module: nn.Module, path) -> None:
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))


def test_shipped_extractor_matches_the_classifier(shipped):
    assert shipped.name == "fashion-classifier" and shipped.input_shape == (1, 28, 28)
    assert (shipped.feature_dim, shipped.num_classes) == (128, 10)
    assert len(shipped.fingerprint) == 16
    x = _images(10)
    feats, logits = shipped.embed(x)
    assert feats.dtype == logits.dtype == torch.float64
    model = load_classifier()
    with torch.no_grad():
        torch.testing.assert_close(feats, model.features(x).double())
        torch.testing.assert_close(logits, model(x).double())
    torch.testing.assert_close(shipped.features(x), feats)
    torch.testing.assert_close(shipped.logits(x), logits)


def test_results_do_not_depend_on_batch_size():
    x = _images(13)
    small = load_extractor(batch_size=4).features(x)
    large = load_extractor(batch_size=64).features(x)
    torch.testing.assert_close(small, large, rtol=1e-5, atol=1e-5)


def test_uint8_images_are_converted(shipped):
    u8 = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(shipped.features(u8), shipped.features(u8.float() / 127.5 - 1))


def test_empty_batch_gives_empty_features(shipped):
    feats, logits = shipped.embed(torch.empty(0, 1, 28, 28))
    assert feats.shape == (0, 128) and logits.shape == (0, 10)


def test_wrong_shape_names_both_shapes(shipped):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\), got \(4, 3, 32, 32\)"):
        shipped.features(_images(4, (3, 32, 32)))


def test_out_of_range_images_are_refused_with_their_range(shipped):
    x = _images(4)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.5, -1.25
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\].*span \[-1\.25, 1\.5\]"):
        shipped.features(x)
    with pytest.raises(ValueError, match=r"span \[0, 255\]"):
        shipped.features(torch.linspace(0, 255, 784).reshape(1, 1, 28, 28))
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        shipped.features(x)


def test_rounding_slack_is_accepted(shipped):
    x = _images(2)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.0005, -1.0005
    assert shipped.features(x).shape == (2, 128)


def test_classifier_folder(tmp_path, shipped):
    torch.manual_seed(1)
    model = FashionClassifier().eval()
    save_classifier(model, tmp_path / "mine")
    extractor = load_extractor(str(tmp_path / "mine"))
    assert extractor.name == "classifier-mine" and extractor.fingerprint != shipped.fingerprint
    x = _images(5)
    reloaded = load_classifier(tmp_path / "mine")  # float16 on disk
    with torch.no_grad():
        torch.testing.assert_close(extractor.features(x), reloaded.features(x).double())


def test_classifier_folder_missing_file_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json does not exist"):
        load_extractor(str(tmp_path / "empty"))


def test_torchscript_extractor(tmp_path):
    torch.manual_seed(0)
    net = TinyNet().eval()
    _script(net, tmp_path / "tiny.pt")
    extractor = load_extractor(str(tmp_path / "tiny.pt"), input_shape=(3, 8, 8), batch_size=3)
    assert extractor.name == "torchscript-tiny" and extractor.feature_dim == 5
    assert extractor.num_classes is None
    x = _images(7, (3, 8, 8))
    feats = extractor.features(x)
    assert feats.shape == (7, 5) and feats.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(feats, net(x).flatten(1).double())
    assert extractor.logits(x) is None


def test_torchscript_input_shape_from_module_attribute(tmp_path):
    class WithShape(TinyNet):
        input_shape: list[int]

        def __init__(self) -> None:
            super().__init__()
            self.input_shape = [3, 8, 8]

    _script(WithShape(), tmp_path / "shaped.pt")
    assert load_extractor(str(tmp_path / "shaped.pt")).input_shape == (3, 8, 8)


def test_torchscript_errors(tmp_path):
    _script(TinyNet(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="give the .* input shape"):
        load_extractor(str(tmp_path / "tiny.pt"))
    with pytest.raises(ValueError, match=r"fails on a dummy batch of shape \(2, 1, 8, 8\)"):
        load_extractor(str(tmp_path / "tiny.pt"), input_shape=(1, 8, 8))
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(ValueError, match="not a TorchScript file: expected a module saved"):
        load_extractor(str(tmp_path / "notes.pt"), input_shape=(3, 8, 8))
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_extractor(str(tmp_path / "state.pt"), input_shape=(3, 8, 8))


def test_unknown_spec_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown feature extractor 'resnet'"):
        load_extractor("resnet")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_extractor(str(tmp_path / "missing.pt"))


def test_custom_extractor_from_a_function():
    extractor = FeatureExtractor(
        lambda x: (x.flatten(1)[:, :3], None), name="first-pixels", input_shape=(1, 4, 4)
    )
    x = _images(5, (1, 4, 4))
    torch.testing.assert_close(extractor.features(x), x.flatten(1)[:, :3].double())
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        FeatureExtractor(lambda x: (x, None), name="bad", input_shape=(1, 4, 4), batch_size=0)
