"""The one-call Python API (``pixdiff.load(...).generate``) and the Steering request it builds:
names and ids, n, nfe, outputs, saving and reloading, networks built in Python."""

import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff.guidance import ClassifierFreeGuidance, Thresholding
from pixdiff.nets import UNetConfig, build_net
from pixdiff.sampling import steps_for_nfe


@pytest.fixture(scope="module")
def fashion():
    return pixdiff.load("fashion")


@pytest.fixture(scope="module")
def base(sr_runs):
    return pixdiff.load(sr_runs["base"])  # classes "cat", "dog"; 8x8 RGB


def test_a_class_name_and_its_id_draw_the_same_images(fashion):
    by_name = fashion.generate(classes="sneaker", n=2, steps=3, output="tensor")
    by_id = fashion.generate(classes=7, n=2, steps=3, output="tensor")
    assert by_name.shape == (2, 1, 28, 28) and torch.equal(by_name, by_id)
    assert by_name.abs().max() <= 1  # clipped to the image range


def test_pil_output_and_n_from_a_list_of_classes(fashion, tmp_path):
    images = fashion.generate(classes=["Bag", "Trouser", "Dress"], steps=2, seed=3)
    assert len(images) == 3 and all(isinstance(i, Image.Image) for i in images)
    assert images[0].size == (28, 28) and images[0].mode == "L"
    paths = pixdiff.save_images(images, tmp_path / "out")
    assert [p.name for p in paths] == ["grid.png", "000000.png", "000001.png", "000002.png"]
    back = pixdiff.images.from_pil(Image.open(paths[1]))
    want = fashion.generate(classes="Bag", n=1, steps=2, seed=3, output="tensor")[0]
    torch.testing.assert_close(back, want, atol=1 / 127.5, rtol=0)  # one 8-bit level


def test_seeds_make_images_reproducible_and_distinct(fashion):
    a = fashion.generate(classes="Coat", n=2, steps=2, seed=0, output="tensor")
    assert torch.equal(a, fashion.generate(classes="Coat", n=2, steps=2, seed=0, output="tensor"))
    b = fashion.generate(classes="Coat", n=1, steps=2, seed=1, output="tensor")
    # image i uses seed + i; a batch of 1 and of 2 may round differently in the network on
    # some CPUs (about 2e-6 seen), far below the O(1) gap between two seeds' images
    assert torch.allclose(a[1], b[0], atol=1e-4, rtol=0)
    assert (a[0] - b[0]).abs().max() > 0.1


def test_nfe_picks_the_most_steps_within_the_budget(fashion):
    by_nfe = fashion.generate(classes=1, sampler="heun", nfe=7, output="tensor")
    steps = steps_for_nfe("heun", 7)
    by_steps = fashion.generate(classes=1, sampler="heun", steps=steps, output="tensor")
    assert torch.equal(by_nfe, by_steps)
    with pytest.raises(ValueError, match="steps or nfe, not both"):
        fashion.generate(classes=1, steps=3, nfe=3)


def test_bad_requests_are_one_line_errors(fashion):
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        fashion.generate(classes="zebra", steps=1)
    with pytest.raises(ValueError, match="need\\(s\\) a text-conditioned model"):
        fashion.generate(prompts="red apple", steps=1)
    with pytest.raises(ValueError, match="output must be"):
        fashion.generate(classes=1, steps=1, output="png")
    with pytest.raises(ValueError, match="unknown shipped model"):
        pixdiff.shipped.shipped_run("fashun")


def test_info_describes_the_model(fashion):
    info = fashion.info()
    assert info["kind"] == "class" and info["image_shape"] == [1, 28, 28]
    assert info["classes"][7] == "Sneaker" and info["guidance"] == 2.0


def test_save_round_trips_and_never_overwrites(base, tmp_path):
    out = base.save(tmp_path / "copy")
    again = pixdiff.load(out)
    assert (out / ".pixdiff-run").exists()
    kwargs = {"classes": "dog", "n": 2, "steps": 2, "output": "tensor"}
    assert torch.equal(again.generate(**kwargs), base.generate(**kwargs))
    with pytest.raises(FileExistsError, match="not empty"):
        base.save(out)


def test_a_network_trained_in_python_can_be_sampled_saved_and_loaded(tmp_path):
    net = build_net(
        UNetConfig(
            image_size=8,
            in_channels=1,
            out_channels=1,
            model_channels=16,
            num_classes=2,
            channel_mult=(1, 2),
            attention_resolutions=(),
        )
    )
    model = pixdiff.Model.from_net(net, schedule="cosine", prediction="v", class_names=["a", "b"])
    x = model.generate(classes="b", n=2, steps=2, output="tensor")
    assert x.shape == (2, 1, 8, 8)
    loaded = pixdiff.load(model.save(tmp_path / "mine"))
    assert loaded.info()["prediction"] == "v" and loaded.class_names == ["a", "b"]
    y = loaded.generate(classes="b", n=2, steps=2, output="tensor")
    assert torch.equal(x, y)


def test_the_default_scale_applies_only_where_something_steers(base):
    run_scale = base.config["train"]["sample"]["guidance"]
    steered = pixdiff.Steering(classes="cat").resolve(base, 2)
    assert steered.scale == run_scale and steered.labels.tolist() == [0, 0]
    assert isinstance(steered.denoiser, ClassifierFreeGuidance)
    plain = pixdiff.Steering().resolve(base, 2)
    assert plain.scale == 1.0 and plain.denoiser is base.denoiser
    assert plain.cond.label.tolist() == [2, 2]  # the null label
    away = pixdiff.Steering(negative_class="dog").resolve(base, 2)
    assert away.scale == run_scale and away.labels is None  # a negative steers too
    with pytest.raises(ValueError, match="pass --class"):
        pixdiff.Steering(guidance=3.0).resolve(base, 2)


def test_all_cycles_through_the_classes_and_thresholding_stacks(base):
    steering = pixdiff.Steering(
        classes="all", guidance=1.0, options=pixdiff.guidance.GuidanceOptions(threshold="static")
    )
    resolved = steering.resolve(base, 5)
    assert resolved.labels.tolist() == [0, 1, 0, 1, 0]
    assert isinstance(resolved.denoiser, Thresholding)  # scale 1: no CFG wrapper


def test_a_cascade_stage_takes_only_what_it_is_conditioned_on(base):
    unconditional = pixdiff.Model.from_net(
        build_net(
            UNetConfig(
                image_size=8, model_channels=16, channel_mult=(1, 2), attention_resolutions=()
            )
        )
    )
    steering = pixdiff.Steering(classes="dog", guidance=4.0)
    assert steering.for_model(base) == steering
    assert not steering.for_model(unconditional).steers()
    assert steering.for_model(base, guidance=2.0).guidance == 2.0
    steering.check_consumed([base, unconditional])
    with pytest.raises(ValueError, match="no stage of the cascade is class-conditional"):
        steering.check_consumed([unconditional])
