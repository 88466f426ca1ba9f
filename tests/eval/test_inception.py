"""The FID Inception-v3 against the reference libraries (torch-fidelity's network and resize,
torchmetrics' FID), its weights files, and the errors a user can cause.

Without the released weights, a random set of weights stands in: the network, the
preprocessing and the FID must then agree with the references' exactly as with the real ones.
With ``PIXDIFF_INCEPTION_WEIGHTS`` set to the released file, the same FID parity runs on them.
"""

import os
import pickle

import pytest
import torch

from pixdiff.checkpoint import read_tensors, save_tensors
from pixdiff.data import to_model_space
from pixdiff.eval import FeatureStats, frechet_distance, load_extractor
from pixdiff.eval.inception import (
    WEIGHTS_ENV,
    WEIGHTS_FORMAT,
    WEIGHTS_SHA256,
    FIDInceptionV3,
    convert_inception_weights,
    inception_state_dict,
)
from pixdiff.eval.resize import resize_tf1_bilinear
from pixdiff.files import file_sha256


def _random_state() -> dict[str, torch.Tensor]:
    """Random weights whose BatchNorm statistics are those of two random images (resized as
    in use), so that activations stay normalised to the end and the features of different
    images differ (with the default statistics, every image gives nearly the same features)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics = the batch's
    pixels = torch.randint(0, 256, (2, 3, 28, 28), generator=generator).float()
    with torch.no_grad():
        net.train()(resize_tf1_bilinear(pixels, (299, 299)))
    return net.state_dict()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A .pth state dict of random FID Inception-v3 weights, saved as the released file is."""
    path = tmp_path_factory.mktemp("inception") / "random.pth"
    torch.save(_random_state(), path)
    return path


def _uint8(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def reference_net(torch_fidelity, random_weights):
    """torch-fidelity's Inception-v3 extractor (pool3 features) with the random weights."""
    return torch_fidelity.inception.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(random_weights)
    )


@pytest.fixture(scope="module")
def extractor(random_weights):
    return load_extractor("inception", weights=random_weights, batch_size=8)


def test_keys_and_shapes_are_those_of_the_reference(reference_net):
    ours = FIDInceptionV3().state_dict()
    assert len(ours) == 566  # the count of the released file
    theirs = reference_net.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_features_equal_torch_fidelity(reference_net, extractor):
    """Grey 28 x 28 and RGB 17 x 23 images: the features of torch-fidelity's extractor fed
    the same pixels as uint8 RGB (grey repeated), from the same weights."""
    assert (extractor.input_shape, extractor.feature_dim) == ((3, 299, 299), 2048)
    assert extractor.num_classes is None and extractor.name == "inception"
    for images in (_uint8(1, 1, 28, 28, seed=1), _uint8(1, 3, 17, 23, seed=2)):
        (expected,) = reference_net(images.expand(-1, 3, -1, -1))
        features = extractor.features(to_model_space(images))  # float in [-1, 1], quantized back
        torch.testing.assert_close(features, expected.double(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(extractor.features(images), features, rtol=0, atol=0)


def _fid_both_ways(fid_module, extractor, weights, real, fake, tmp_path):
    """(pixdiff's FID, torchmetrics' FID) of uint8 grey images real and fake (N, 1, H, W)."""
    pth = tmp_path / "weights.pth"  # torch-fidelity reads a .pth, whatever pixdiff was given
    torch.save(inception_state_dict(weights), pth)
    metric = fid_module.FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(pth), antialias=False
    )  # antialias=False: torch-fidelity's TF 1.x resize, as pixdiff
    metric.update(real.expand(-1, 3, -1, -1), real=True)
    metric.update(fake.expand(-1, 3, -1, -1), real=False)
    stats = [FeatureStats.from_features(extractor.features(x)) for x in (real, fake)]
    ours = frechet_distance(*stats, require_full_rank=False)  # N < D + 1, as in the reference
    return ours, metric.compute().item()


def test_fid_equals_torchmetrics_with_random_weights(
    torchmetrics_fid, extractor, random_weights, tmp_path
):
    real, fake = _uint8(2, 1, 28, 28, seed=3), _uint8(2, 1, 28, 28, seed=4) // 2
    ours, theirs = _fid_both_ways(torchmetrics_fid, extractor, random_weights, real, fake, tmp_path)
    assert theirs > 1 and ours == pytest.approx(theirs, rel=1e-3)  # images that differ


def test_fid_equals_torchmetrics_with_the_released_weights(torchmetrics_fid, tmp_path):
    """The target of issue 22: Inception FID within 1e-3 of the reference library's."""
    weights = os.environ.get(WEIGHTS_ENV)
    if not weights:
        pytest.skip(
            f"{WEIGHTS_ENV} is not set: point it at the released FID Inception weights "
            f"(SHA-256 {WEIGHTS_SHA256}; docs/concepts.md, 'Standard FID') to run this check"
        )
    extractor = load_extractor("inception", weights=weights, batch_size=8)
    real, fake = _uint8(16, 1, 28, 28, seed=5), _uint8(16, 1, 28, 28, seed=6) // 2
    ours, theirs = _fid_both_ways(torchmetrics_fid, extractor, weights, real, fake, tmp_path)
    assert theirs > 0 and ours == pytest.approx(theirs, rel=1e-3)


def test_conversion_round_trip(random_weights, tmp_path):
    out = tmp_path / "inception.safetensors"
    digest = convert_inception_weights(random_weights, out)
    assert digest == file_sha256(random_weights) != WEIGHTS_SHA256
    original, converted = inception_state_dict(random_weights), inception_state_dict(out)
    assert list(original) == list(converted) == list(FIDInceptionV3().state_dict())
    assert all(torch.equal(original[k], converted[k]) for k in original)
    FIDInceptionV3().load_state_dict(converted)  # strict
    assert read_tensors(out)[1] == {"format": WEIGHTS_FORMAT, "source_sha256": digest}


def test_files_without_batch_counters_load(tmp_path):
    state = {k: v for k, v in _random_state().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    loaded = inception_state_dict(tmp_path / "old.pth")
    assert len(loaded) == 566 and torch.equal(loaded["fc.weight"], state["fc.weight"])


class NotTensors:
    """A pickled object that weights_only refuses to build."""


def _one_line_error(error_type, path, match):
    with pytest.raises(error_type, match=match) as info:
        inception_state_dict(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_weights_files_are_one_line_naming_the_file(tmp_path):
    _one_line_error(FileNotFoundError, tmp_path / "absent.pth", "does not exist; download it")
    (tmp_path / "notes.pth").write_text("not weights\nat all")
    _one_line_error(ValueError, tmp_path / "notes.pth", "is not a PyTorch state dict of tensors")
    with open(tmp_path / "object.pth", "wb") as f:
        pickle.dump({"net": NotTensors()}, f)
    _one_line_error(ValueError, tmp_path / "object.pth", "holds other objects .*no code runs")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    _one_line_error(ValueError, tmp_path / "list.pth", "holds a list, not a state dict")
    state = _random_state()
    torch.save({"conv.weight": torch.zeros(1), **state}, tmp_path / "extra.pth")
    _one_line_error(ValueError, tmp_path / "extra.pth", r"1 unexpected keys \(e.g. conv.weight\)")
    state["fc.weight"] = torch.zeros(10, 2048)
    del state["fc.bias"]
    torch.save(state, tmp_path / "head.pth")
    _one_line_error(ValueError, tmp_path / "head.pth", "1 missing keys .* 1 tensors of the wrong")
    FeatureStats(torch.zeros(2), torch.eye(2), 3).save(tmp_path / "stats.safetensors")
    _one_line_error(ValueError, tmp_path / "stats.safetensors", "feature_stats/1 file, not Incep")
    save_tensors(tmp_path / "bare.safetensors", {"x": torch.zeros(1)})
    _one_line_error(ValueError, tmp_path / "bare.safetensors", r"missing keys \(e.g. Conv2d_1a")


def test_the_extractor_needs_its_weights(monkeypatch, random_weights, tmp_path, extractor):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(ValueError, match="needs its weights file: pass --weights FILE"):
        load_extractor("inception")
    assert extractor.fingerprint == file_sha256(random_weights)[:16]
    with pytest.raises(ValueError, match="only to the 'inception' extractor"):
        load_extractor("fashion-classifier", weights=random_weights)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(FileNotFoundError, match="absent.pth does not exist"):
        load_extractor("inception")
