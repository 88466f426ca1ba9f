"""img2img (SDEdit) and inpainting (replacement, RePaint resampling): strength 0 is the identity,
the grid below the strength is what runs, the known region survives every sampler, the forward
jump has the right moments; the CLI commands and their one-line errors."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.cli.main import main
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import DenoiserWrapper
from pixdiff.pipelines.edit import img2img, inpaint, jump_back
from pixdiff.sampling import Sampling
from pixdiff.schedule_registry import get_schedule
from pixdiff.schedules import q_sample


def shrink_x0(x, c_noise, cond=None):
    """A stand-in x0-prediction network: x0 = 0.3 x_in."""
    return 0.3 * x


class Counting(DenoiserWrapper):
    """Records the time of every call."""

    def __init__(self, denoiser):
        super().__init__(denoiser)
        self.times: list[float] = []

    def forward(self, x_t, t, cond=None):
        self.times.append(float(torch.as_tensor(t).flatten()[0]))
        return self.denoiser(x_t, t, cond)


def denoiser(schedule: str = "linear") -> Counting:
    return Counting(Denoiser(shrink_x0, get_schedule(schedule), "x0"))


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_img2img_strength_zero_returns_the_input_exactly():
    x0, den = images(), denoiser()
    assert (
        torch.equal(img2img(den, x0, strength=0.0, sampling=Sampling(steps=10)), x0)
        and not den.times
    )


def test_img2img_noises_to_the_strength_and_runs_the_rest_of_the_grid():
    x0, den = images(), denoiser()
    ddpm = Sampling("ddpm", 10)
    out = img2img(den, x0, strength=0.5, sampling=ddpm, seed=3)
    assert den.times == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])  # trailing grid t = k / 10
    assert out.shape == x0.shape and not torch.allclose(out, x0)
    assert torch.equal(out, img2img(denoiser(), x0, strength=0.5, sampling=ddpm, seed=3))
    with pytest.raises(ValueError, match=r"strength must lie in \[0, 1\]"):
        img2img(den, x0, strength=1.5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "heun", "dpmpp-2m", "euler-ancestral"])
@pytest.mark.parametrize("resample", [1, 3])
def test_inpainting_keeps_the_known_region(sampler, resample):
    x0, den = images(), denoiser()
    known = torch.zeros(1, 1, 8, 8)
    known[..., :, :4] = 1
    out = inpaint(den, x0, known, resample=resample, sampling=Sampling(sampler, 6), seed=1)
    assert (out - x0)[..., :4].abs().max() < 1e-5
    assert (out - x0)[..., 4:].abs().max() > 0.1
    if sampler != "heun":  # one call per step, R per step but the last (RePaint, Alg. 1)
        assert len(den.times) == 5 * resample + 1


def test_inpainting_checks_mask_and_resample():
    x0 = images()
    with pytest.raises(ValueError, match=r"mask must be \(N, 1, 8, 8\)"):
        inpaint(denoiser(), x0, torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="resample must be >= 1"):
        inpaint(denoiser(), x0, torch.ones(1, 1, 8, 8), resample=0)


def test_jump_back_is_the_forward_transition():
    """x_s ~ q(x_s | x0), then the jump to t: the marginal must be q(x_t | x0)."""
    schedule, gen = get_schedule("cosine"), torch.Generator().manual_seed(0)
    x0 = torch.full((40000, 1, 1, 1), 0.7)
    s, t = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    x_s = q_sample(schedule, x0, s, torch.randn(x0.shape, generator=gen))
    x_t = jump_back(schedule, x_s, s, t, gen)
    assert float(x_t.mean()) == pytest.approx(0.7 * float(schedule.alpha(t)), abs=0.01)
    assert float(x_t.std()) == pytest.approx(float(schedule.sigma(t)), abs=0.01)


def test_edit_cli_strength_zero_writes_the_input(sr_runs, tmp_path, png):
    source = png(tmp_path / "in.png", 8)
    argv = ["edit", str(sr_runs["base"]), "--input", str(source), "--strength", "0"]
    assert main([*argv, "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "e" / "000000.png")), np.asarray(Image.open(source))
    )


def test_inpaint_cli_keeps_the_known_pixels(sr_runs, tmp_path, png):
    source = png(tmp_path / "in.png", 8)
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 255  # white: fill
    Image.fromarray(mask).save(tmp_path / "mask.png")
    argv = ["inpaint", str(sr_runs["base"]), "--input", str(source), "--mask"]
    argv += [str(tmp_path / "mask.png"), "--resample", "2", "--steps", "3", "--class", "dog"]
    assert main([*argv, "-n", "2", "--out", str(tmp_path / "i"), "--no-progress"]) == 0
    out = np.asarray(Image.open(tmp_path / "i" / "000001.png"))
    keep = mask == 0
    assert np.array_equal(out[keep], np.asarray(Image.open(source))[keep])


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("inpaint", ["--mask", "{big}"], "mask {big} is 16x16, but image {small} is 8x8"),
        ("inpaint", ["--mask", "{small}", "--resample", "0"], "resample must be >= 1"),
        ("edit", ["--strength", "2"], "strength must lie in [0, 1]"),
        ("edit", ["--strength", "0.5", "--prompt", "a cat"], "need(s) a text-conditioned model"),
    ],
)
def test_bad_input_gives_one_line_errors(sr_runs, tmp_path, png, capsys, command, extra, message):
    paths = {"big": str(png(tmp_path / "big.png", 16)), "small": str(png(tmp_path / "s.png", 8))}
    argv = [command, str(sr_runs["base"]), "--input", paths["small"], "--steps", "2"]
    argv += [e.format(**paths) for e in extra] + ["--out", str(tmp_path / "o"), "--no-progress"]
    rgb_mask = pytest.warns(UserWarning, match="mask to grey")  # the masks above are RGB files
    with rgb_mask if command == "inpaint" else nullcontext():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(**paths) in err and len(err.splitlines()) == 1, err
