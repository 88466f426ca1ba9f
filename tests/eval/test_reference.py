"""The real-data reference of the feature metrics: computed once, cached, keyed, recomputed
when corrupt."""

import pytest
import torch

from pixdiff.data import ImageSet
from pixdiff.eval import FeatureExtractor, FeatureStats, reference_stats
from pixdiff.eval import reference as reference_module


@pytest.fixture
def tiny_data(monkeypatch):
    """A fake 40-image grey 8x8 dataset in place of load_dataset; counts and records calls."""
    images = torch.randint(
        0, 256, (40, 1, 8, 8), generator=torch.Generator().manual_seed(28), dtype=torch.uint8
    )
    calls = []

    def fake_load_dataset(spec, *, image_size, channels=None, split="train"):
        calls.append((spec, image_size, channels, split))
        return ImageSet(images, name=f"{spec}-{split}")

    monkeypatch.setattr(reference_module, "load_dataset", fake_load_dataset)
    return images, calls


def _pooled_extractor(fingerprint: str = "abc") -> FeatureExtractor:
    """4-d features: means of the four 4x4 quadrants of (N, 1, 8, 8) images."""
    forward = lambda x: (torch.nn.functional.avg_pool2d(x, 4).flatten(1), None)  # noqa: E731
    return FeatureExtractor(
        forward, name="quadrants", input_shape=(1, 8, 8), fingerprint=fingerprint
    )


def test_reference_stats_are_computed_once_then_cached(tiny_data, tmp_path):
    images, calls = tiny_data
    extractor = _pooled_extractor()
    first = reference_stats("fashion-mnist", "test", extractor, cache_dir=tmp_path)
    assert calls == [("fashion-mnist", 8, 1, "test")]
    feats = extractor.features(images)
    torch.testing.assert_close(first.features, feats.float())
    expected = FeatureStats.from_features(feats)
    assert torch.equal(first.stats.mu, expected.mu) and first.stats.n == 40
    assert torch.equal(first.stats.sigma, expected.sigma)
    second = reference_stats("fashion-mnist", "test", extractor, cache_dir=tmp_path)
    assert len(calls) == 1  # read from the cache
    assert torch.equal(second.stats.sigma, first.stats.sigma)
    assert torch.equal(second.features, first.features)
    (path,) = tmp_path.glob("*.safetensors")
    assert "fashion-mnist-test-quadrants-abc-1x8x8-nall" in path.name
    assert FeatureStats.load(path).n == 40


def test_reference_cache_keys(tiny_data, tmp_path):
    images, calls = tiny_data
    extractor = _pooled_extractor()
    subset = reference_stats("fashion-mnist", "test", extractor, n=10, cache_dir=tmp_path)
    assert subset.stats.n == 10 and len(calls) == 1
    full = extractor.features(images).float()
    assert all((full == row).all(1).any() for row in subset.features)  # rows of the dataset
    reference_stats("fashion-mnist", "train", extractor, n=10, cache_dir=tmp_path)
    reference_stats("fashion-mnist", "test", _pooled_extractor("def"), n=10, cache_dir=tmp_path)
    assert len(calls) == 3 and len(list(tmp_path.glob("*.safetensors"))) == 3
    with pytest.raises(ValueError, match=r"n must be in 1..40"):
        reference_stats("fashion-mnist", "test", extractor, n=41, cache_dir=tmp_path)


def test_reference_cache_default_folder_and_corrupt_file(tiny_data, tmp_path, monkeypatch):
    _, calls = tiny_data
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path))
    extractor = _pooled_extractor()
    reference_stats("fashion-mnist", "test", extractor)
    (path,) = (tmp_path / "reference-stats").glob("*.safetensors")
    path.write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="ignoring unreadable reference cache"):
        again = reference_stats("fashion-mnist", "test", extractor)
    assert len(calls) == 2 and again.stats.n == 40
    assert FeatureStats.load(path).n == 40  # rewritten


def test_real_images_load_at_the_model_shape_and_pass_the_extractor_resize(tiny_data, tmp_path):
    """image_shape: the real images load at the model's shape (8 x 8 grey here) and the
    extractor resizes them to its own input (3 x 4 x 4) as it resizes the samples."""
    images, calls = tiny_data
    forward = lambda x: (x.flatten(1), None)  # noqa: E731
    extractor = FeatureExtractor(forward, name="pixels", input_shape=(3, 4, 4))
    ref = reference_stats("fashion-mnist", "test", extractor, cache_dir=tmp_path,
                          image_shape=(1, 8, 8))  # fmt: skip
    assert calls == [("fashion-mnist", 8, 1, "test")]
    x = torch.nn.functional.interpolate(
        images.float() / 127.5 - 1, size=(4, 4), mode="bilinear", antialias=True
    ).repeat(1, 3, 1, 1)
    torch.testing.assert_close(ref.features, x.flatten(1))
    (path,) = tmp_path.glob("*.safetensors")
    assert "pixels-unhashed-3x4x4-from1x8x8-nall" in path.name
