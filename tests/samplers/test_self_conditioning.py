"""Self-conditioning at sampling time (Chen et al. 2023, Alg. 2): the denoiser carries its
previous x0 estimate; samplers, CFG batching, Picard iteration, inpainting and repeated or
interleaved runs each see the estimate of their own samples' previous call."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import ClassifierFreeGuidance, null_label_cond
from pixdiff.nets import build_net, preset
from pixdiff.pipelines.edit import inpaint
from pixdiff.pipelines.model import Model
from pixdiff.samplers import Picard, get_sampler, per_sample_generators
from pixdiff.sampling import Sampling
from pixdiff.schedule_registry import get_schedule
from pixdiff.self_conditioning import SelfConditioning, self_conditioned

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEDULE = get_schedule("linear")
K = 3  # classes of EstimateNet; label K is the null label


class EstimateNet(nn.Module):
    """An x0-predicting stand-in for a self-conditioned network, elementwise (so batch
    independent) and parameter-free (float64 end to end). Its output depends on the previous
    estimate it is given (zeros when absent) and on the label; it records what it was given."""

    def __init__(self, self_condition: bool = True):
        super().__init__()
        self.config = SimpleNamespace(self_condition=self_condition)
        self.seen: list = []  # cond.self_cond of each call (None: absent)
        self.outputs: list = []

    def forward(self, x, c_noise, cond=None):
        given = None if cond is None else cond.self_cond
        self.seen.append(given)
        previous = torch.zeros_like(x) if given is None else given.to(x.dtype)
        label = None if cond is None else cond.label
        shift = 0 if label is None else 0.2 * label.to(x.dtype).reshape(-1, 1, 1, 1)
        scale = (1 - c_noise.to(x.dtype) / 2000).reshape(-1, 1, 1, 1)
        out = scale * (0.6 * x + 0.3 * torch.tanh(2 * previous)) + shift
        self.outputs.append(out)
        return out


def denoiser(self_condition: bool = True) -> Denoiser:
    return Denoiser(EstimateNet(self_condition), SCHEDULE, "x0")


def start(n: int = 4, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 4, 4, generator=g, dtype=dtype)


def random_net(name: str) -> nn.Module:
    """A self-conditioned tiny net with every weight random (no zero-init), so its output
    depends on every input channel."""
    torch.manual_seed(0)
    net = build_net(preset(name, self_condition=True, image_size=8)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return net


def run(sampling: Sampling, den, x, *, seed: int = 0):
    ts = sampling.grid(SCHEDULE)
    gens = per_sample_generators(seed, x.shape[0])
    with torch.no_grad():
        return sampling(den, x, ts, generators=gens)


def with_zeros(den, x) -> SelfConditioning:
    """A run whose first call is given an all-zero estimate instead of none."""
    wrapper = SelfConditioning(den)
    wrapper.previous = torch.zeros_like(x)
    return wrapper


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "heun", "ddpm", "unipc-bh2"])
def test_a_zero_first_estimate_is_the_same_as_none(sampler):
    """The issue's test: the sampler's result is the same whether the previous estimate is
    passed as zeros at the first step or absent (Alg. 2 starts from x_pred = 0)."""
    x, sampling = start(), Sampling(sampler, 6)
    den = denoiser()
    absent = run(sampling, den, x)
    assert den.net.seen[0] is None  # the first call really had none
    zeros = run(sampling, with_zeros(den, x), x)
    assert torch.equal(absent, zeros)


@pytest.mark.parametrize("name", ["unet-tiny", "dit-tiny"])
def test_a_zero_first_estimate_is_the_same_as_none_for_the_nets(name):
    net = random_net(name)
    den = Denoiser(net, SCHEDULE, "eps")
    x = start(2, dtype=torch.float32).repeat(1, 2, 2, 2)[:, :3]  # (2, 3, 8, 8)
    absent = run(Sampling("ddim", 4), den, x)
    zeros = run(Sampling("ddim", 4), with_zeros(den, x), x)
    assert torch.equal(absent, zeros)
    # and the estimate matters: the same net fed no estimate at every step differs
    plain = Sampling("ddim", 4).grid(SCHEDULE)
    with torch.no_grad():
        unwrapped = get_sampler("ddim").bind(None)(den, x, plain)  # no run: zeros every step
    assert (unwrapped - absent).abs().max() > 1e-3


def test_ddim_is_chen_et_al_algorithm_2():
    """Sampling through the wrapper equals Alg. 2 written out: x_pred = 0; each step feeds
    x_pred and replaces it by the new estimate; deterministic DDIM updates."""
    x, sampling = start(), Sampling("ddim", 5)
    den = denoiser()
    got = run(sampling, den, x)
    ts = sampling.grid(SCHEDULE)
    x_t, x_pred = x, torch.zeros_like(x)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        d = den(x_t, t, Cond(self_cond=x_pred))
        x_t = SCHEDULE.alpha(s) * d.x0 + SCHEDULE.sigma(s) * d.eps
        x_pred = d.x0
    torch.testing.assert_close(got, x_t, rtol=0, atol=1e-12)


def test_each_call_is_given_the_estimate_of_the_call_before():
    """Multi-stage steps too (Heun: the second stage sees the first stage's estimate)."""
    den = denoiser()
    run(Sampling("heun", 4), den, start())
    net = den.net
    assert net.seen[0] is None and len(net.seen) > 4
    for k in range(1, len(net.seen)):
        assert torch.equal(net.seen[k], net.outputs[k - 1])  # x0-prediction: output = x0


def test_a_network_without_self_conditioning_never_sees_an_estimate():
    den = denoiser(self_condition=False)
    assert self_conditioned(den) is den
    run(Sampling("ddim", 3), den, start())
    assert den.net.seen == [None] * 3
    # and a Cond carrying one reaches it without (the Denoiser drops the hint)
    den(start(), 0.5, Cond(self_cond=start()))
    assert den.net.seen[-1] is None


# ----------------------------------------------------------------------------- runs


def test_runs_share_nothing_even_interleaved():
    """The state is a per-run wrapper: two runs on one Denoiser, stepped alternately, give what
    each gives alone, and a second run repeats the first."""
    den = denoiser()
    ts = Sampling("ddim", 5).grid(SCHEDULE)
    xa, xb = start(seed=1), start(seed=2)
    alone_a, alone_b = run(Sampling("ddim", 5), den, xa), run(Sampling("ddim", 5), den, xb)
    wa, wb = SelfConditioning(den), SelfConditioning(den)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        for w, name in ((wa, "a"), (wb, "b")):
            x = xa if name == "a" else xb
            d = w(x, t)
            x = SCHEDULE.alpha(s) * d.x0 + SCHEDULE.sigma(s) * d.eps
            xa, xb = (x, xb) if name == "a" else (xa, x)
    torch.testing.assert_close(xa, alone_a, rtol=0, atol=1e-12)
    torch.testing.assert_close(xb, alone_b, rtol=0, atol=1e-12)
    assert torch.equal(run(Sampling("ddim", 5), den, start(seed=1)), alone_a)


def test_generate_is_the_same_in_any_batch_size():
    """Each batch of a generate() call is its own run; per-sample seeds make the images not
    depend on how they are batched, the estimates included."""
    net = random_net("unet-tiny")
    model = Model.from_net(net, schedule="linear", prediction="eps")
    one = model.generate(n=4, steps=4, batch_size=4, output="tensor")
    two = model.generate(n=4, steps=4, batch_size=1, output="tensor")
    torch.testing.assert_close(one, two, rtol=0, atol=1e-4)  # batch-size round-off, some CPUs
    assert torch.equal(model.generate(n=4, steps=4, batch_size=4, output="tensor"), one)


def test_a_run_called_with_another_batch_is_refused():
    wrapper = SelfConditioning(denoiser())
    wrapper(start(4), 0.5)
    with pytest.raises(ValueError, match="one run per batch"):
        wrapper(start(3), 0.4)


# ----------------------------------------------------------------------------- compositions


def test_cfg_gives_both_branches_the_estimate_of_their_rows():
    """One batched pass for CFG: the conditional rows and the unconditional rows are given the
    estimate of the same samples: the guided x0 of the step before."""
    den = denoiser()
    guided = ClassifierFreeGuidance(den, scale=2.0, uncond=null_label_cond(K))
    x, cond = start(), Cond(label=torch.arange(4) % K)
    wrapper = self_conditioned(guided)
    first = wrapper(x, torch.tensor(0.8, dtype=torch.float64), cond)
    wrapper(x, torch.tensor(0.6, dtype=torch.float64), cond)
    seen = den.net.seen[-1]
    assert seen.shape[0] == 8
    assert torch.equal(seen[:4], first.x0) and torch.equal(seen[4:], first.x0)


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver-2", "ddpm"])
def test_picard_converges_to_the_sequential_run_estimates_included(sampler):
    """Picard iteration carries the estimate as part of each window state; as the tolerance
    falls it reaches the sequential run, which it could not if the estimate were dropped."""
    den, x = denoiser(), start()
    steps = 12
    seq = run(Sampling(sampler, steps), den, x)
    errors = []
    for tolerance in (1e-1, 1e-4, 1e-12):
        par = run(Sampling(sampler, steps, parallel=Picard(window=5, tolerance=tolerance)), den, x)
        errors.append((par - seq).abs().max().item())
    assert errors[-1] < 1e-10 and errors[-1] <= errors[0], errors
    no_estimate = run(Sampling(sampler, steps), denoiser(self_condition=False), x)
    assert (no_estimate - seq).abs().max() > 1e-3


def test_picard_lends_and_returns_a_runs_estimate():
    """Given a run (one inpainting step), Picard starts from its estimate and leaves the last."""
    den, x = denoiser(), start()
    ts = Sampling("ddim", 3).grid(SCHEDULE)
    seq_run = SelfConditioning(den)
    seq = Sampling("ddim", 3)(seq_run, x, ts)
    par_run = SelfConditioning(den)
    par = Sampling("ddim", 3, parallel=Picard(window=3, tolerance=1e-14))(par_run, x, ts)
    torch.testing.assert_close(par, seq, rtol=0, atol=1e-12)
    torch.testing.assert_close(par_run.previous, seq_run.previous, rtol=0, atol=1e-12)


def test_inpainting_carries_the_estimate_across_its_steps():
    den = denoiser()
    x0 = torch.zeros(2, 2, 4, 4, dtype=torch.float64)
    known = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    known[..., :2] = 1
    with torch.no_grad():
        inpaint(den, x0, known, sampling=Sampling("ddim", 4), resample=2)
    seen = den.net.seen
    assert seen[0] is None and all(s is not None for s in seen[1:])
    assert all(torch.equal(seen[k], den.net.outputs[k - 1]) for k in range(1, len(seen)))
