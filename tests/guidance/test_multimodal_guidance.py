"""Multi-modal classifier-free guidance (InstructPix2Pix, Brooks et al. 2023, Eq. 3) on a toy
denoiser: the composition matches its definition, reduces to ordinary CFG with one modality,
drops each modality in the right branch, runs in one batched call, and keeps the interval and
rescale; in training each condition is dropped on its own."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from pixdiff.checkpoint import LoadedModel
from pixdiff.conditioning import Cond
from pixdiff.config import TrainConfig, to_dict
from pixdiff.data import Batch, ControlConfig
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import ClassifierFreeGuidance, cfg_rescale, label_cond
from pixdiff.multimodal_guidance import MultiModalGuidance
from pixdiff.pipelines.control import null_map
from pixdiff.pipelines.steering import Steering
from pixdiff.schedule_registry import get_schedule
from pixdiff.training.batch_inputs import batch_inputs

K, N = 3, 4  # classes (label K is the null label), samples
SCHEDULE = get_schedule("cosine")


class ToyNet(nn.Module):
    """Elementwise in x; the label and the map each shift the output in their own way, and the
    map's effect depends on the label (so the branches all differ). Records its calls."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.linspace(-1.0, 1.0, K + 1).double(), requires_grad=False)
        self.calls: list[Cond] = []

    def forward(self, x, c_noise, cond):
        self.calls.append(cond)
        s = self.shift[cond.label].reshape(-1, 1, 1, 1)
        m = cond.control.mean(dim=1, keepdim=True)
        return (
            0.4 * x
            + s
            + (0.7 + 0.3 * s) * m
            + 0.05 * torch.sin(3 * x + c_noise.reshape(-1, 1, 1, 1) / 500)
        )


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    den = Denoiser(ToyNet(), SCHEDULE, "eps")
    x = torch.randn(N, 2, 3, 3, generator=g, dtype=torch.float64)
    cond = Cond(label=torch.arange(N) % K, control=torch.rand(N, 1, 3, 3, generator=g) * 2 - 1)
    return den, x, cond


def mm(den, s_i, s_t, **kw):
    return MultiModalGuidance(
        den, map_scale=s_i, text_scale=s_t, drop_map=null_map, drop_text=label_cond(K), **kw
    )


def branches(den, x, t, cond):
    """e(0, 0), e(c_I, 0), e(c_I, c_T), each by its own call."""
    no_text = label_cond(K)(cond)
    return den(x, t, null_map(no_text)), den(x, t, no_text), den(x, t, cond)


@pytest.mark.parametrize(("s_i", "s_t"), [(2.0, 4.0), (3.0, 1.0), (0.0, 2.5), (1.5, 1.5)])
def test_the_composition_matches_its_definition(s_i, s_t):
    den, x, cond = setup()
    t = torch.tensor([0.2, 0.5, 0.7, 0.9], dtype=torch.float64)
    out = mm(den, s_i, s_t)(x, t, cond)
    e00, ei0, eit = branches(den, x, t, cond)
    for field in ("x0", "eps"):
        a, b, c = (getattr(e, field) for e in (e00, ei0, eit))
        expected = a + s_i * (b - a) + s_t * (c - b)  # Brooks et al. 2023, Eq. 3
        assert torch.allclose(getattr(out, field), expected, rtol=0, atol=1e-12), field
    c = den.coefs(t, x)  # x0 and eps mixed alike: the result stays on the path
    assert torch.allclose(c.alpha * out.x0 + c.sigma * out.eps, x, atol=1e-12)


def test_one_modality_is_ordinary_cfg():
    """s_I = 1: text CFG given the map; s_I = s_T: CFG of both conditions together; and a model
    steered by the map alone: CFG of the map (Steering builds exactly that)."""
    den, x, cond = setup()
    t = torch.tensor(0.6, dtype=torch.float64)
    text = ClassifierFreeGuidance(den, scale=3.0, uncond=label_cond(K))(x, t, cond)
    assert torch.equal(mm(den, 1.0, 3.0)(x, t, cond).x0, text.x0)
    both = ClassifierFreeGuidance(den, scale=2.0, uncond=lambda c: null_map(label_cond(K)(c)))
    assert torch.equal(mm(den, 2.0, 2.0)(x, t, cond).eps, both(x, t, cond).eps)
    assert torch.equal(mm(den, 1.0, 1.0)(x, t, cond).x0, den(x, t, cond).x0)


def test_dropping_each_modality_gives_the_right_branch():
    den, x, cond = setup()
    net = den.net
    mm(den, 2.0, 4.0)(x, 0.5, cond)
    (call,) = net.calls  # ONE batched call: (c_I, c_T), (c_I, 0), (0, 0)
    labels, maps = call.label.reshape(3, N), call.control.reshape(3, N, -1)
    assert torch.equal(labels[0], cond.label) and (labels[1:] == K).all()
    assert torch.equal(maps[0], cond.control.reshape(N, -1))
    assert torch.equal(maps[1], maps[0]) and (maps[2] == 0).all()
    net.calls.clear()
    mm(den, 1.0, 4.0)(x, 0.5, cond)  # s_I = 1: no (0, 0) branch
    assert net.calls[0].label.shape == (2 * N,) and (net.calls[0].control != 0).all()


def test_interval_and_rescale_apply_to_the_composed_result():
    den, x, cond = setup()
    t = torch.tensor([0.1, 0.5, 0.6, 0.95], dtype=torch.float64)
    out = mm(den, 2.0, 3.0, interval=(0.3, 0.9), rescale=0.7)(x, t, cond)
    plain = den(x, t, cond)
    assert torch.equal(out.x0[[0, 3]], plain.x0[[0, 3]])  # outside: the conditional estimate
    e00, ei0, eit = branches(den, x, t, cond)
    rows = [1, 2]
    composed = e00.x0 + 2.0 * (ei0.x0 - e00.x0) + 3.0 * (eit.x0 - ei0.x0)
    expected = cfg_rescale(composed[rows], plain.x0[rows], 0.7)
    assert torch.allclose(out.x0[rows], expected, atol=1e-12)


def test_steering_composes_the_two_scales_of_a_control_model():
    """Through Steering: a class-and-map model gets Eq. 3; a model of the map alone gets CFG of
    the map; each condition's own dropout is what makes the branches meaningful."""
    den, x, cond = setup()
    config = {"train": to_dict(TrainConfig(control=ControlConfig(kind="edges")))}
    net = den.net
    net.config = type("C", (), {"num_classes": K, "control_channels": 1, "image_size": 3})()
    model = LoadedModel(den, net, config, [str(k) for k in range(K)], Path("toy"))
    steering = Steering(
        classes=cond.label, guidance=3.0, control=cond.control, control_guidance=2.0
    )
    resolved = steering.resolve(model, N)
    assert isinstance(resolved.denoiser, MultiModalGuidance) and resolved.scale == 3.0
    t = torch.tensor(0.4, dtype=torch.float64)
    assert torch.equal(resolved.denoiser(x, t, resolved.cond).x0, mm(den, 2.0, 3.0)(x, t, cond).x0)
    undropped = {"train": to_dict(TrainConfig(control=ControlConfig(kind="edges", dropout=0.0)))}
    with pytest.raises(ValueError, match="trained without control dropout"):
        steering.resolve(replace(model, config=undropped), N)


def test_training_drops_each_condition_on_its_own():
    cfg = TrainConfig(control=ControlConfig(kind="edges", dropout=0.5))
    cfg = replace(cfg, diffusion=replace(cfg.diffusion, label_dropout=0.5))
    n = 4000
    control = torch.rand(n, 1, 2, 2) * 2 - 1
    batch = Batch(torch.zeros(n, 3, 2, 2), torch.zeros(n, dtype=torch.long), None, control)
    model = type("M", (nn.Module,), {})()
    model.config = type("C", (), {"num_classes": 2})()
    _, out = batch_inputs(cfg, model, batch, torch.Generator().manual_seed(0), "cpu")
    no_label = out.label == 2
    no_map = (out.control == 0).flatten(1).all(1)
    kept = ~no_map
    assert torch.equal(out.control[kept], control[kept])  # a kept map is unchanged
    for a in (no_label, ~no_label):
        for b in (no_map, ~no_map):
            assert abs((a & b).double().mean().item() - 0.25) < 0.03  # independent drops
