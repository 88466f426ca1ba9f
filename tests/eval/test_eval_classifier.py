"""The Fashion-MNIST evaluation classifier: shipped weights, features, save/load, errors."""

import json

import pytest
import torch

from pixdiff.data import ImageSet, load_fashion_mnist, to_model_space
from pixdiff.eval import (
    FashionClassifier,
    classify,
    load_classifier,
    save_classifier,
    train_classifier,
)
from pixdiff.eval.classifier import DEFAULT_DIR
from pixdiff.eval.classifier_training import random_shift


@pytest.fixture(scope="module")
def shipped() -> FashionClassifier:
    return load_classifier()


@pytest.fixture(scope="module")
def test_head() -> ImageSet:
    """The first 2000 Fashion-MNIST test images."""
    test = load_fashion_mnist("test")
    return ImageSet(test.images[:2000], test.labels[:2000], test.class_names, name="test-2000")


def _random_model(seed: int = 0) -> FashionClassifier:
    """A classifier with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = FashionClassifier()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand_like(buf) + (0.5 if "var" in name else -0.5))
    return model.eval()


def test_shipped_classifier_is_accurate(shipped, test_head):
    assert not shipped.training
    preds, probs = classify(shipped, test_head.images)
    accuracy = (preds == test_head.labels).float().mean().item()
    assert accuracy >= 0.90, f"shipped classifier accuracy {accuracy:.4f} < 0.90"
    assert probs.shape == (2000, 10) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(2000))
    assert torch.equal(preds, probs.argmax(1))


def test_shipped_asset_is_small_and_float16():
    weights = DEFAULT_DIR / "model.safetensors"
    assert weights.stat().st_size < 1_000_000
    config = json.loads((DEFAULT_DIR / "config.json").read_text())
    assert config["weights_dtype"] == "float16"
    assert config["metadata"]["test_accuracy"] >= 0.92


def test_features_and_logits_shapes(shipped, test_head):
    x = to_model_space(test_head.images[:16])
    with torch.no_grad():
        features, logits = shipped.features(x), shipped(x)
    assert features.shape == (16, 128) and features.dtype == torch.float32
    assert logits.shape == (16, 10)
    assert (features >= 0).all()  # post-ReLU


def test_classify_accepts_uint8_and_model_space(shipped, test_head):
    images = test_head.images[:64]
    preds_u8, probs_u8 = classify(shipped, images, batch_size=24)
    preds_f, probs_f = classify(shipped, to_model_space(images))
    assert torch.equal(preds_u8, preds_f)
    torch.testing.assert_close(probs_u8, probs_f)


def test_save_load_round_trips_through_float16(tmp_path):
    model = _random_model()
    save_classifier(model, tmp_path / "clf", metadata={"note": "test"})
    loaded = load_classifier(tmp_path / "clf")
    assert not loaded.training
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]  # no temp files left behind
    for name, expected in model.state_dict().items():
        got = loaded.state_dict()[name]
        if expected.is_floating_point():
            assert got.dtype == torch.float32
            expected = expected.to(torch.float16).float()
        assert torch.equal(got, expected), name
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["metadata"] == {"note": "test"}


def test_corrupt_weights_raise_naming_the_file(tmp_path):
    folder = save_classifier(_random_model(), tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="model.safetensors"):
        load_classifier(folder)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_classifier(folder)
    weights.unlink()
    with pytest.raises(ValueError, match="model.safetensors"):
        load_classifier(folder)


def test_corrupt_or_foreign_config_raises_naming_the_file(tmp_path):
    folder = save_classifier(_random_model(), tmp_path)
    config = folder / "config.json"
    config.write_text("{ not json")
    with pytest.raises(ValueError, match="config.json"):
        load_classifier(folder)
    config.write_text(json.dumps({"format": "pixdiff.fashion_classifier/1", "model": {"x": 1}}))
    with pytest.raises(ValueError, match="config.json.*valid model keys"):
        load_classifier(folder)


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (1, 28, 28), (2, 784)])
def test_wrong_input_shape_raises(shape):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        _random_model()(torch.zeros(shape))


def test_images_outside_model_space_raise():
    model = _random_model()
    with pytest.raises(ValueError, match=r"model space \[-1, 1\]"):
        model(torch.full((2, 1, 28, 28), 255.0))
    with pytest.raises(ValueError, match=r"model space \[-1, 1\].*to_model_space"):
        model.features(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 1, 28, 28), float("nan")))
    model(torch.full((2, 1, 28, 28), 1.2))  # a slight overshoot from a sampler is accepted


def test_random_shift_moves_content_and_fills_background():
    x = -torch.ones(64, 1, 28, 28)
    x[:, :, 13, 13] = 1.0
    shifted = random_shift(x, max_shift=2, generator=torch.Generator().manual_seed(0))
    rows, cols = (shifted[:, 0] == 1.0).nonzero()[:, 1:].T
    assert len(rows) == 64  # one bright pixel per image, never shifted out
    assert rows.sub(13).abs().max() <= 2 and cols.sub(13).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10
    assert torch.equal(random_shift(x, max_shift=0, generator=torch.Generator()), x)


def test_training_is_deterministic_and_leaves_global_rng(test_head):
    tiny = ImageSet(test_head.images[:256], test_head.labels[:256], name="tiny")
    state = torch.random.get_rng_state()
    runs = [
        train_classifier(
            epochs=1, batch_size=64, seed=5, augment=True, train_data=tiny, test_data=tiny
        )
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), state)
    (a, acc_a), (b, acc_b) = runs
    assert acc_a == acc_b and not a.training
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_rgb_classifier_of_another_size_trains_saves_and_extracts(tmp_path):
    """The architecture for 16x16 RGB images with many classes (as the emoji feature network):
    its shape comes from the data, survives save/load, and the extractor takes that shape."""
    from pixdiff.eval.features import load_extractor

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8)
    data = ImageSet(images, torch.arange(12), name="ids")
    model, _ = train_classifier(
        epochs=1, batch_size=4, train_data=data, test_data=data, augment=True, max_shift=3,
        flip=False, fill=1.0, feature_dim=16,
    )  # fmt: skip
    assert model.input_shape == (3, 16, 16) and model.num_classes == 12
    extractor = load_extractor(str(save_classifier(model, tmp_path / "ids")))
    assert extractor.input_shape == (3, 16, 16) and extractor.feature_dim == 16
    assert extractor.features(images).shape == (12, 16)
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\), got \(2, 1, 28, 28\)"):
        model.features(torch.zeros(2, 1, 28, 28))


def test_random_shift_fills_with_the_given_background():
    x = torch.zeros(8, 3, 6, 6)
    shifted = random_shift(x, max_shift=2, generator=torch.Generator().manual_seed(0), fill=1.0)
    assert set(shifted.unique().tolist()) <= {0.0, 1.0} and (shifted == 1.0).any()
