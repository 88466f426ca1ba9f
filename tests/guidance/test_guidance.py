"""Guidance wrappers: CFG identities, negative conditioning, interval, rescale, thresholding and
classifier guidance against the exact class posterior of a Gaussian mixture."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import pixdiff
from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    GuidanceOptions,
    Thresholding,
    dynamic_threshold,
    label_cond,
    null_label_cond,
    static_threshold,
)
from pixdiff.pipelines.steering import Steering
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import GaussianMixture

K = 3  # classes; label K is the null label
N = 6
SCHEDULE = get_schedule("linear")


class LabelNet(nn.Module):
    """A class-conditional stand-in network, elementwise in x (so batch-independent); it counts
    the rows it is called on."""

    def __init__(self, channels: int = 2):
        super().__init__()
        self.shift = nn.Parameter(torch.linspace(-1.5, 1.5, K + 1), requires_grad=False)
        self.channels, self.rows = channels, 0

    def forward(self, x, c_noise, cond):
        self.rows += x.shape[0]
        s = self.shift[cond.label].reshape(-1, 1, 1, 1) * (1 + c_noise.reshape(-1, 1, 1, 1) / 999)
        out = 0.3 * (1 + 0.5 * s) * x + s + 0.1 * torch.sin(3 * x)  # the label sets the std too
        return out.repeat(1, self.channels // x.shape[1], 1, 1)


def make(prediction="eps", learn_sigma=False) -> Denoiser:
    net = LabelNet(channels=4 if learn_sigma else 2)
    return Denoiser(net, SCHEDULE, prediction, learn_sigma=learn_sigma)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 2, 4, 4, generator=g)
    cond = Cond(label=torch.arange(N) % K)
    return x, cond


def cfg(den, scale, **kw):
    return ClassifierFreeGuidance(
        den, scale=scale, uncond=kw.pop("uncond", null_label_cond(K)), **kw
    )


def assert_on_path(x_t, d, t):
    c = SCHEDULE.coefs(torch.as_tensor(t, dtype=torch.float64), 4)
    torch.testing.assert_close(c.alpha.float() * d.x0 + c.sigma.float() * d.eps, x_t)


T = torch.tensor(0.6, dtype=torch.float64)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_w1_is_the_conditional_model_exactly_with_one_pass(prediction):
    den = make(prediction)
    x, cond = inputs()
    ref = den(x, T, cond)
    den.net.rows = 0
    out = cfg(den, 1.0)(x, T, cond)
    assert torch.equal(out.x0, ref.x0) and torch.equal(out.eps, ref.eps)
    assert den.net.rows == N


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_w0_is_the_unconditional_model_exactly(prediction):
    den = make(prediction)
    x, cond = inputs()
    ref = den(x, T, null_label_cond(K)(cond))
    den.net.rows = 0
    out = cfg(den, 0.0)(x, T, cond)
    assert torch.equal(out.x0, ref.x0) and torch.equal(out.eps, ref.eps)
    assert den.net.rows == 2 * N  # one batched pass of both branches


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_guided_x0_and_eps_stay_on_the_path(prediction):
    den = make(prediction)
    x, cond = inputs()
    out = cfg(den, 3.0)(x, T, cond)
    assert_on_path(x, out, T)
    c, u = den(x, T, cond), den(x, T, null_label_cond(K)(cond))
    torch.testing.assert_close(out.x0, u.x0 + 3 * (c.x0 - u.x0))
    torch.testing.assert_close(out.eps, u.eps + 3 * (c.eps - u.eps))


def test_negative_class_replaces_the_null_branch():
    den = make()
    x, cond = inputs()
    neg = label_cond(1)
    c, n = den(x, T, cond), den(x, T, neg(cond))
    same = cfg(den, 1.0, uncond=neg)(x, T, cond)
    assert torch.equal(same.x0, c.x0) and torch.equal(same.eps, c.eps)
    out = cfg(den, 2.0, uncond=neg)(x, T, cond)
    torch.testing.assert_close(out.x0, 2 * c.x0 - n.x0)
    torch.testing.assert_close(out.eps, 2 * c.eps - n.eps)


def test_interval_outside_is_conditional_with_one_call_per_sample():
    den = make()
    x, cond = inputs()
    guided = cfg(den, 4.0, interval=(0.2, 0.5))
    ref = den(x, T, cond)  # T = 0.6 is outside
    den.net.rows = 0
    out = guided(x, T, cond)
    assert torch.equal(out.x0, ref.x0) and torch.equal(out.eps, ref.eps)
    assert den.net.rows == N
    inside = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(guided(x, inside, cond).x0, cfg(den, 4.0)(x, inside, cond).x0)


def test_interval_per_sample_times_guide_only_the_samples_inside():
    den = make()
    x, cond = inputs()
    t = torch.tensor([0.1, 0.3, 0.6, 0.45, 0.9, 0.2], dtype=torch.float64)
    on = (t >= 0.2) & (t <= 0.5)
    den.net.rows = 0
    out = cfg(den, 4.0, interval=(0.2, 0.5))(x, t, cond)
    assert den.net.rows == N + int(on.sum())
    full, plain = cfg(den, 4.0)(x, t, cond), den(x, t, cond)
    torch.testing.assert_close(out.x0[on], full.x0[on])
    torch.testing.assert_close(out.x0[~on], plain.x0[~on])
    assert_on_path(x, out, t.reshape(-1, 1, 1, 1))


def test_rescale_phi1_matches_the_conditional_std_and_phi0_is_plain_cfg():
    den = make("v")
    x, cond = inputs()
    c = den(x, T, cond)
    out = cfg(den, 5.0, rescale=1.0)(x, T, cond)
    dims = (1, 2, 3)
    torch.testing.assert_close(out.x0.std(dim=dims), c.x0.std(dim=dims))
    assert not torch.allclose(out.x0, cfg(den, 5.0)(x, T, cond).x0)
    assert_on_path(x, out, T)
    plain, off = cfg(den, 5.0)(x, T, cond), cfg(den, 5.0, rescale=0.0)(x, T, cond)
    assert torch.equal(off.x0, plain.x0) and torch.equal(off.eps, plain.eps)


def test_learned_variance_passes_the_conditional_branch():
    den = make("eps", learn_sigma=True)
    x, cond = inputs()
    out = cfg(den, 3.0)(x, T, cond)
    assert torch.equal(out.var_output, den(x, T, cond).var_output)


def test_cfg_needs_a_condition():
    with pytest.raises(ValueError, match="needs a condition"):
        cfg(make(), 2.0)(inputs()[0], T, None)


# ----------------------------------------------------------------------------- thresholding


def test_dynamic_threshold_bounds_and_identity_inside_unit_range():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1  # |x0| <= 1
    assert torch.equal(dynamic_threshold(x0), x0)
    x0[2:] *= 5  # samples 2, 3 over-saturated
    out = dynamic_threshold(x0, 0.9)
    assert torch.equal(out[:2], x0[:2])  # per sample: the others are untouched
    assert out.abs().max() <= 1
    s = torch.quantile(x0[2].abs().flatten(), 0.9)
    torch.testing.assert_close(out[2], x0[2].clamp(-s, s) / s)
    assert out[2].abs().max() == 1  # values past the percentile land on the bound
    assert torch.equal(static_threshold(x0), x0.clamp(-1, 1))


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_thresholding_wrapper_recomputes_eps_on_the_path(method):
    den = Denoiser(lambda x, c: 4 * x, SCHEDULE, "x0")  # x0 far outside [-1, 1]
    x, _ = inputs()
    out = Thresholding(den, method=method)(x, T)
    assert out.x0.abs().max() <= 1 and out.x0.abs().max() > 0.9
    assert_on_path(x, out, T)


def test_thresholding_leaves_a_small_x0_alone():
    den = Denoiser(lambda x, c: 0.1 * x, SCHEDULE, "x0")
    x, _ = inputs()
    for method in ("static", "dynamic"):
        out = Thresholding(den, method=method)(x, T)
        assert torch.equal(out.x0, den(x, T).x0)
        torch.testing.assert_close(out.eps, den(x, T).eps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": (0.8, 0.2)}, "lo <= hi"),
        ({"interval": (-0.1, 0.2)}, "lo <= hi"),
        ({"rescale": -0.5}, "phi must lie in"),
        ({"percentile": 0.0}, r"\(0, 1\]"),
        ({"percentile": 1.5}, r"\(0, 1\]"),
        ({"threshold": "soft"}, "valid"),
    ],
)
def test_bad_options_raise_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuidanceOptions(**kwargs)


def model(num_classes: int) -> SimpleNamespace:
    """What Steering.resolve reads of a model, for a model with ``num_classes`` classes."""
    den = Denoiser(lambda x, c, cond=None: x, SCHEDULE, "x0")
    config = {"train": {"sample": {"guidance": 2.0}}}
    return SimpleNamespace(
        denoiser=den, config=config, class_names=None, num_classes=num_classes, text_encoder=None
    )


def test_guidance_asked_of_an_unconditional_model_is_an_error():
    with pytest.raises(ValueError, match="guidance interval need"):
        Steering(options=GuidanceOptions(interval=(0.1, 0.5))).resolve(model(0), 4)
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        Steering(guidance=3.0).resolve(model(0), 4)
    with pytest.raises(ValueError, match="negative class ids must be in"):
        Steering(negative_class=K, guidance=2.0).resolve(model(K), 4)


# ----------------------------------------------------------------------------- classifier

# two classes: 80% around (-2, 0), 20% around (2, 0)
GM = GaussianMixture(
    torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64),
    torch.tensor([0.5, 0.5], dtype=torch.float64),
    torch.tensor([0.8, 0.2], dtype=torch.float64),
)


def classify(x):
    return GM.class_log_posterior(x, torch.ones(1), torch.zeros(1)).argmax(1)


def test_exact_class_posterior_is_bayes_rule():
    x = torch.randn(5, 2, dtype=torch.float64)
    a, s = torch.tensor([[0.8]]).double(), torch.tensor([[0.6]]).double()
    torch.testing.assert_close(GM.class_log_posterior(x, a, s).exp(), GM.responsibilities(x, a, s))


def test_classifier_guidance_at_scale_one_is_the_exact_conditional_denoiser():
    """eps - sigma grad log p(y|x_t) = -sigma grad log p(x_t|y): Bayes' rule on the scores."""
    den = ClassifierGuidance(
        GM.denoiser(SCHEDULE, "eps"), GM.classifier(SCHEDULE), scale=1.0, model_cond=False
    )
    only_1 = GaussianMixture.gaussian([2.0, 0.0], 0.5).denoiser(SCHEDULE, "eps")
    x = 2 * torch.randn(16, 2, dtype=torch.float64)
    for t in (0.2, 0.5, 0.9):
        t = torch.tensor(t, dtype=torch.float64)
        out, ref = den(x, t, Cond(label=torch.ones(16, dtype=torch.long))), only_1(x, t)
        torch.testing.assert_close(out.x0, ref.x0)
        torch.testing.assert_close(out.eps, ref.eps)


def test_classifier_on_another_schedule_is_matched_by_log_snr():
    x = 2 * torch.randn(8, 2, dtype=torch.float64)
    label = Cond(label=torch.ones(8, dtype=torch.long))
    t = torch.tensor(0.4, dtype=torch.float64)
    outs = [
        ClassifierGuidance(
            GM.denoiser(SCHEDULE, "eps"),
            GM.classifier(get_schedule(name)),
            scale=3.0,
            model_cond=False,
        )(x, t, label)  # fmt: skip
        for name in ("linear", "flow", "vp-cosine")
    ]
    for other in outs[1:]:
        torch.testing.assert_close(other.x0, outs[0].x0)


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_classifier_guided_samples_land_in_the_requested_class(sampler):
    n = 400
    den = GM.denoiser(SCHEDULE, "eps")
    cond = Cond(label=torch.ones(n, dtype=torch.long))
    plain = pixdiff.sample(den, (n, 2), sampler=sampler, steps=30, seed=0)
    guided = ClassifierGuidance(den, GM.classifier(SCHEDULE), scale=3.0, model_cond=False)
    x = pixdiff.sample(guided, (n, 2), sampler=sampler, steps=30, cond=cond, seed=0)
    unguided_rate = (classify(plain) == 1).float().mean().item()
    assert abs(unguided_rate - 0.2) < 0.07  # the prior weight
    assert (classify(x) == 1).float().mean().item() > 0.97


def test_classifier_guidance_needs_labels():
    den = ClassifierGuidance(GM.denoiser(SCHEDULE), GM.classifier(SCHEDULE), scale=1.0)
    with pytest.raises(ValueError, match="cond.label"):
        den(torch.zeros(2, 2), 0.5, None)


def test_classifier_guidance_is_finite_at_zero_snr():
    """On the flow path alpha(1) = 0: x_t says nothing of the class there, so the guided
    estimate is the model's own (it was inf/NaN: x0 = (x_t - sigma eps') / alpha)."""
    flow = get_schedule("flow")
    plain = GM.denoiser(flow, "flow")
    guided = ClassifierGuidance(plain, GM.classifier(flow), scale=3.0, model_cond=False)
    x, label = torch.randn(6, 2, dtype=torch.float64), Cond(label=torch.ones(6, dtype=torch.long))
    t = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5], dtype=torch.float64)
    out, ref = guided(x, t, label), plain(x, t)
    torch.testing.assert_close(out.x0[:3], ref.x0[:3])
    assert out.x0.isfinite().all() and not torch.allclose(out.x0[3:], ref.x0[3:])
    samples = pixdiff.sample(
        guided,
        (64, 2),
        sampler="euler",
        steps=8,
        cond=Cond(label=torch.ones(64, dtype=torch.long)),
        seed=0,
        dtype=torch.float64,
    )
    assert samples.isfinite().all()
