"""Sampling with the network in bf16 / fp16 (``Sampling(net_dtype=...)``, ``--dtype``): the
network's convolutions run in the lower precision, the sampler's state stays float32, and the
samples stay close to fp32's."""

import warnings

import pytest
import torch

import pixdiff
from pixdiff.nets import UNetConfig, build_net
from pixdiff.precision import autocast
from pixdiff.sampling import Sampling, draw

CLASSES = ["a", "b"]
LABELS = torch.tensor([0, 1])


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded (tests/conftest.py)."""


@pytest.fixture(scope="module")
def model() -> pixdiff.Model:
    """A tiny class-conditional U-Net with every weight randomised (zero-initialised output
    layers would make any precision return exactly 0)."""
    torch.manual_seed(0)
    net = build_net(
        UNetConfig(
            image_size=8, in_channels=1, out_channels=1, model_channels=16, num_classes=2,
            channel_mult=(1, 2), attention_resolutions=(4,),
        )
    )  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return pixdiff.Model.from_net(
        net.eval(), schedule="cosine", prediction="v", class_names=CLASSES
    )


class Recorder(torch.nn.Module):
    """A denoiser wrapper that records the dtype of every state x_t the sampler hands it and of
    every x0 estimate it hands back."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser, self.seen = denoiser, []

    @property
    def schedule(self):
        return self.denoiser.schedule

    def forward(self, x_t, t, cond=None):
        out = self.denoiser(x_t, t, cond)
        self.seen.append((x_t.dtype, out.x0.dtype))
        return out


@pytest.mark.parametrize(
    "net_dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_the_network_runs_low_the_sampler_state_stays_float32(model, net_dtype, torch_dtype):
    convs = []
    hook = model.net.out[-1].register_forward_hook(lambda m, i, o: convs.append(o.dtype))
    recorder = Recorder(model.denoiser)
    try:
        sampling = Sampling("dpmpp-2m", 4, net_dtype=net_dtype)
        x = draw(recorder, (2, 1, 8, 8), sampling, cond=pixdiff.Cond(label=LABELS), seed=0)
    finally:
        hook.remove()
    assert x.dtype == torch.float32
    assert recorder.seen == [(torch.float32, torch.float32)] * 4
    assert convs == [torch_dtype] * 4  # the network's last convolution ran in the low precision


def test_bf16_and_fp16_samples_are_close_to_fp32(model):
    """bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.002), fp16 11 (0.0002): over
    six steps the samples move by a few times that, far less than their range [-1, 1]."""
    fp32 = model.generate(classes="b", n=4, steps=6, output="tensor")
    assert fp32.abs().mean() > 0.3
    for net_dtype, bound in (("bf16", 0.03), ("fp16", 0.004)):
        low = model.generate(classes="b", n=4, steps=6, output="tensor", net_dtype=net_dtype)
        error = (low - fp32).pow(2).mean().sqrt().item()
        assert 0 < error < bound, (net_dtype, error)  # nonzero: the low precision ran


def test_fp32_is_the_default_and_unchanged(model):
    cond = pixdiff.Cond(label=LABELS)
    x = pixdiff.sample(model.denoiser, (2, 1, 8, 8), steps=3, cond=cond, seed=0)
    y = pixdiff.sample(model.denoiser, (2, 1, 8, 8), steps=3, cond=cond, seed=0, net_dtype="fp32")
    assert torch.equal(x, y)
    assert Sampling().net_dtype == "fp32"


def test_unknown_precision_and_unsupported_device_are_one_line_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: fp32, bf16, fp16"):
        Sampling(net_dtype="fp8")

    def refusing_autocast(device_type, dtype):  # as torch does for a dtype a device lacks
        message = "In CPU autocast, but the target dtype is not supported.\nDisabling."
        warnings.warn(message, UserWarning, stacklevel=2)

    monkeypatch.setattr(torch, "autocast", refusing_autocast)
    with pytest.raises(ValueError) as err:
        autocast("fp16", "cpu")
    message = str(err.value)
    assert "\n" not in message and message.startswith("fp16 is not supported on cpu")
    assert message.endswith("use bf16 or fp32")
