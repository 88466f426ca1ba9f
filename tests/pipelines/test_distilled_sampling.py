"""How a distilled run is sampled: the config's ``distilled`` section says it. A guided-distilled
student takes the guidance scale as an input (one pass per step, no CFG; Meng et al. 2023);
a consistency model samples with multistep consistency sampling up to its max steps."""

from dataclasses import replace

import pytest
import torch

from pixdiff.conditioning import Cond
from pixdiff.guidance import GuidanceOptions
from pixdiff.nets import build_net, preset
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.model import Model
from pixdiff.pipelines.steering import Steering
from pixdiff.samplers import consistency_step, per_sample_generators, sample_consistency
from pixdiff.sampling import Sampling


class Recording(torch.nn.Module):
    """A net that keeps the batch size and guidance input of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    @property
    def config(self):
        return self.net.config

    def forward(self, x, c_noise, cond=None):
        self.calls.append((x.shape[0], None if cond.guidance is None else cond.guidance.tolist()))
        return self.net(x, c_noise, cond)


def guided_student(scales=(1.0, 3.0), max_steps=4) -> Model:
    cfg = preset("unet-tiny", image_size=8, attention_resolutions=(8,), num_classes=3)
    net = Recording(build_net(replace(cfg, guidance_embed=True)).eval())
    model = Model.from_net(
        net, schedule="cosine", prediction="v", class_names=["a", "b", "c"],
        sample={"sampler": "consistency", "steps": 2, "guidance": 2.0},
    )  # fmt: skip
    distilled = {"method": "consistency", "guidance": list(scales), "max_steps": max_steps}
    model.config = {**model.config, "distilled": distilled}
    return model


def test_a_guided_student_takes_the_scale_as_an_input_in_one_pass_per_step():
    model = guided_student()
    generate(model, Steering(classes=[0, 1, 2], guidance=2.5), Sampling("ddim", 3), n=3)
    assert model.net.calls == [(3, [2.5] * 3)] * 3  # no second CFG branch
    model.net.calls.clear()
    generate(model, Steering(classes="b"), Sampling("consistency", 2), n=2)  # the run's scale
    assert model.net.calls == [(2, [2.0, 2.0])] * 2
    model.net.calls.clear()
    generate(model, None, Sampling("ddim", 1), n=2)  # null label: the lowest scale distilled
    assert model.net.calls == [(2, [1.0, 1.0])]


@pytest.mark.parametrize(
    ("steering", "message"),
    [
        (Steering(classes="a", guidance=4.0), r"guidance 4 is outside .* \[1, 3\]"),
        (Steering(classes="a", negative_class="b"), "--negative-class need"),
        (
            Steering(classes="a", options=GuidanceOptions(interval=(0.2, 0.8))),
            "--guidance-interval need",
        ),
    ],
)
def test_what_a_guided_student_cannot_do_is_one_line(steering, message):
    with pytest.raises(ValueError, match=message):
        generate(guided_student(), steering, Sampling("ddim", 2), n=1)


def test_a_consistency_model_refuses_more_steps_than_it_supports():
    model = guided_student(max_steps=4)
    generate(model, Steering(classes="a"), Sampling("consistency", 4), n=1)
    with pytest.raises(ValueError, match="consistency-distilled model samples in 1 to 4 steps"):
        generate(model, Steering(classes="a"), Sampling("consistency", 5), n=1)
    with pytest.raises(ValueError, match="1 to 4 steps"):
        model.generate(classes="a", steps=8)


def test_consistency_sampling_renoises_the_x0_estimate_with_fresh_noise():
    model = guided_student()
    den, x = model.denoiser, torch.randn(2, 3, 8, 8)
    cond = Cond(label=torch.tensor([0, 1]), guidance=torch.full((2,), 2.0))
    ts = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    with torch.no_grad():
        x_half = consistency_step(den, x, ts[0], ts[1], cond=cond, generator=None)
        gens = per_sample_generators(7, 2)
        out = sample_consistency(den, x, ts, cond=cond, generator=gens)
        gens = per_sample_generators(7, 2)
        x0 = den(x, ts[0], cond).x0
        z = torch.stack([torch.randn(3, 8, 8, generator=g) for g in gens])
        x_s = den.schedule.alpha(ts[1]) * x0 + den.schedule.sigma(ts[1]) * z
        expected = den(x_s.float(), ts[1], cond).x0
    assert torch.allclose(out, expected, atol=1e-6)
    assert x_half.shape == x.shape and not torch.allclose(x_half, x0)  # noised, not x0
    one = sample_consistency(den, x, ts[[0, 2]], cond=cond)
    assert torch.allclose(one, x0, atol=1e-6)  # one step: the one-step map f(x_T, T)
