"""Autoguidance (Karras et al. 2024): D_w = D_guide + w (D_main - D_guide) against exact
Gaussian denoisers, its identities (the model as its own guide, w = 1, the interval), and the
rules Steering.resolve applies to a guide."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pixdiff.autoguidance import Autoguidance
from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import ClassifierGuidance, GuidanceOptions, Thresholding
from pixdiff.pipelines.autoguide import check_guide
from pixdiff.pipelines.steering import Steering
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import GaussianMixture

SCHEDULE = get_schedule("vp-cosine")
T = torch.tensor(0.55, dtype=torch.float64)
# the main model knows the data N(mu, 0.5^2); the guide, weaker, believes it twice as wide
MU = [1.0, -0.5]
MAIN = GaussianMixture.gaussian(MU, 0.5).denoiser(SCHEDULE, "eps")
GUIDE = GaussianMixture.gaussian(MU, 1.0).denoiser(SCHEDULE, "v")


class Counting(nn.Module):
    """A denoiser that counts the rows it is called on."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser, self.schedule, self.rows = denoiser, denoiser.schedule, 0

    def coefs(self, t, x):
        return self.denoiser.coefs(t, x)

    def forward(self, x, t, cond=None):
        self.rows += x.shape[0]
        return self.denoiser(x, t, cond)


def x_t(n=6, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0, 3.5])
def test_the_mix_is_eq_1_with_the_guide_for_the_unconditional_branch(w):
    """x0 = x0_guide + w (x0_main - x0_guide), eps likewise, on the path x_t = a x0 + s eps;
    for Gaussians the posterior gain mixes the same way: g_w = g_guide + w (g_main - g_guide)."""
    x = x_t()
    out = Autoguidance(MAIN, GUIDE, scale=w)(x, T)
    main, guide = MAIN(x, T), GUIDE(x, T)
    torch.testing.assert_close(out.x0, guide.x0 + w * (main.x0 - guide.x0))
    torch.testing.assert_close(out.eps, guide.eps + w * (main.eps - guide.eps))
    c = SCHEDULE.coefs(T, 2)
    torch.testing.assert_close(c.alpha * out.x0 + c.sigma * out.eps, x)
    mu = torch.tensor(MU, dtype=torch.float64)
    gain = [a * s**2 / (a**2 * s**2 + c.sigma**2) for a, s in ((c.alpha, 0.5), (c.alpha, 1.0))]
    g_w = gain[1] + w * (gain[0] - gain[1])
    torch.testing.assert_close(out.x0, mu + g_w * (x - c.alpha * mu))


@pytest.mark.parametrize("w", [0.0, 2.0, 5.0])
def test_the_model_as_its_own_guide_is_the_plain_model_exactly(w):
    x = x_t()
    out, plain = Autoguidance(MAIN, MAIN, scale=w)(x, T), MAIN(x, T)
    assert torch.equal(out.x0, plain.x0) and torch.equal(out.eps, plain.eps)


def test_w1_is_the_main_model_without_a_guide_pass():
    guide = Counting(GUIDE)
    x = x_t()
    out = Autoguidance(MAIN, guide, scale=1.0)(x, T)
    assert torch.equal(out.x0, MAIN(x, T).x0) and guide.rows == 0


def test_the_interval_guides_only_the_samples_inside():
    guide = Counting(GUIDE)
    x = x_t()
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.95], dtype=torch.float64)
    out = Autoguidance(MAIN, guide, scale=3.0, interval=(0.25, 0.75))(x, t)
    inside = torch.tensor([1, 2, 3])
    full = Autoguidance(MAIN, GUIDE, scale=3.0)(x, t)
    outside = torch.tensor([0, 4, 5])
    torch.testing.assert_close(out.x0[inside], full.x0[inside])
    torch.testing.assert_close(out.x0[outside], MAIN(x, t).x0[outside])
    assert guide.rows == 3


def test_rescale_phi1_matches_the_main_models_std():
    x = x_t(n=64).reshape(8, 16)
    main = GaussianMixture.gaussian(MU * 8, 0.5).denoiser(SCHEDULE, "eps")
    guide = GaussianMixture.gaussian(MU * 8, 1.0).denoiser(SCHEDULE, "eps")
    out = Autoguidance(main, guide, scale=4.0, rescale=1.0)(x, T)
    plain = Autoguidance(main, guide, scale=4.0)(x, T)
    torch.testing.assert_close(out.x0.std(dim=1), main(x, T).x0.std(dim=1))
    assert (plain.x0.std(dim=1) - main(x, T).x0.std(dim=1)).abs().min() > 1e-3


def test_the_guide_gets_the_same_condition():
    seen = []

    class Net(nn.Module):
        def forward(self, x, c_noise, cond):
            seen.append(cond.label)
            return x * (1 + cond.label.reshape(-1, 1).to(x.dtype))

    main, guide = Denoiser(Net(), SCHEDULE, "x0"), Denoiser(Net(), SCHEDULE, "x0")
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    Autoguidance(main, guide, scale=2.0)(x_t(), T, Cond(label=labels))
    assert len(seen) == 2 and all(torch.equal(s, labels) for s in seen)


# ----------------------------------------------------------------------------- Steering


def model(num_classes=0, *, schedule="vp-cosine", shape=(1, 8, 8), names=None, **config):
    """What Steering.resolve and check_guide read of a loaded run."""
    den = Denoiser(lambda x, c, cond=None: 0.5 * x, get_schedule(schedule), "x0")
    cfg = {"train": {"sample": {"guidance": 2.5}, "diffusion": {"schedule": {"kind": schedule}}}}
    return SimpleNamespace(
        denoiser=den, config={**cfg, **config}, class_names=names, num_classes=num_classes,
        text_encoder=None, image_shape=shape, path=f"runs/{schedule}-{num_classes}",
    )  # fmt: skip


def test_an_unconditional_model_is_autoguided_at_the_runs_scale():
    main, guide = model(), model()
    resolved = Steering(guide_with=guide).resolve(main, 4)
    assert isinstance(resolved.denoiser, Autoguidance) and resolved.scale == 2.5
    assert resolved.denoiser.guide is guide.denoiser and resolved.cond is None
    assert Steering(guide_with=guide, guidance=4.0).resolve(main, 4).denoiser.scale == 4.0


def test_autoguidance_replaces_cfg_and_stacks_with_the_other_options():
    main, guide = model(3, names=["a", "b", "c"]), model(3, names=["a", "b", "c"])
    options = GuidanceOptions(interval=(0.2, 0.8), rescale=0.5, threshold="static")
    resolved = Steering(classes="b", guide_with=guide, options=options).resolve(main, 4)
    auto = resolved.denoiser.denoiser
    assert isinstance(resolved.denoiser, Thresholding) and isinstance(auto, Autoguidance)
    assert auto.interval == (0.2, 0.8) and auto.rescale == 0.5
    assert auto.denoiser is main.denoiser and auto.guide is guide.denoiser
    assert torch.equal(resolved.cond.label, torch.full((4,), 1))


def test_classifier_guidance_stacks_on_autoguidance():
    classifier = SimpleNamespace(num_classes=3, class_names=None, schedule=SCHEDULE)
    options = GuidanceOptions(classifier=classifier)
    resolved = Steering(classes=1, guide_with=model(), options=options).resolve(model(), 2)
    assert isinstance(resolved.denoiser, ClassifierGuidance)
    assert isinstance(resolved.denoiser.denoiser, Autoguidance)


@pytest.mark.parametrize(
    ("guide", "message"),
    [
        (model(3, shape=(1, 16, 16)), "image shape (1, 16, 16) does not match the model's (1, 8"),
        (model(3, schedule="linear"), "schedule {'kind': 'linear'} does not match the model's"),
        (model(0), "conditioning unconditional does not match the model's class-conditional (3"),
        (model(3, names=["x", "y", "z"]), "classes ['x', 'y', 'z'] does not match"),
        (model(3, distilled={"method": "progressive"}), "a distilled model cannot"),
    ],
)
def test_a_guide_that_does_not_match_is_named_in_one_line(guide, message):
    main = model(3)
    with pytest.raises(ValueError, match="--guide-with runs/") as e:
        Steering(guide_with=guide).resolve(main, 2)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1


def test_text_models_and_negatives_and_cascades_are_refused():
    text = model()
    text.text_encoder = SimpleNamespace()
    with pytest.raises(ValueError, match="text-conditioned models is not supported"):
        check_guide(text, text)
    main = model(3)
    with pytest.raises(ValueError, match="--negative-class set"):
        Steering(negative_class=1, guide_with=model(3)).resolve(main, 2)
    with pytest.raises(ValueError, match="not the stages of a cascade"):
        Steering(guide_with=model(3)).check_consumed([main])
