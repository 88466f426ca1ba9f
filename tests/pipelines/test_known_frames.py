"""Known frames of a clip (docs/video.md, Image-to-video): zero-initialised extra inputs, the
training mask reaching the net, RePaint-style replacement against an analytic oracle, the CLI's
first frame, and bad input in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.cli.main import main
from pixdiff.conditioning import Cond
from pixdiff.config import DataConfig, TrainConfig
from pixdiff.data import Batch
from pixdiff.data.video_io import read_clip_file
from pixdiff.nets import build_net, preset
from pixdiff.nets.video import init_from_image
from pixdiff.nets.video_unet import VideoUNetConfig
from pixdiff.pipelines.known_frames import KnownFrames, draw_known
from pixdiff.sampling import Sampling
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import FrameCorrelatedGaussian
from pixdiff.training.video_run import clip_cond

FRAMES = 4
TINY = [
    "--data", "fashion-clips", "--frames", str(FRAMES), "--set", "data.num_clips=8",
    "--preset", "video-unet-tiny", "--image-size", "32", "--batch-size", "4", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.threads=1", "--set", "optim.warmup_steps=1",
    "--set", "model.overrides.model_channels=8", "--steps", "1",
]  # fmt: skip


def nets_with_known_frames():
    torch.manual_seed(0)
    unet = build_net(preset("video-unet-tiny", model_channels=8, num_frames=3, known_frames=True))
    dit = build_net(preset("video-dit-tiny", num_frames=3, known_frames=True))
    return unet, dit


def perturb_all_but_known_inputs(net) -> None:
    """Random weights everywhere (the zero-initialised outputs too) except the known inputs."""
    known = net.input_conv().weight
    with torch.no_grad():
        for p in net.parameters():
            if p is not known:
                p.add_(0.1 * torch.randn_like(p))


def test_zero_initialised_known_inputs_leave_the_outputs_unchanged():
    for net in nets_with_known_frames():
        net.eval()
        perturb_all_but_known_inputs(net)
        x, c = torch.randn(2, 3, 3, 32, 32), torch.tensor([10.0, 500.0])
        with torch.no_grad():
            plain, given = net(x, c), net(x, c, Cond(known=torch.randn(2, 3, 4, 32, 32)))
        torch.testing.assert_close(plain, given, rtol=0, atol=0)
        assert net.input_conv().weight.shape[1] == 3 + 3 + 1  # x_t, the frame, the mask


def test_an_image_init_gets_zero_known_inputs_and_is_the_image_model_per_frame():
    torch.manual_seed(1)
    image = build_net(preset("unet-tiny", model_channels=8)).eval()
    with torch.no_grad():
        for p in image.parameters():
            p.add_(0.1 * torch.randn_like(p))
    video = build_net(VideoUNetConfig.from_image(
        image.config, num_frames=3, known_frames=True, temporal_conv_resolutions=(32, 16),
        temporal_attention_resolutions=(16,),
    ))  # fmt: skip
    init_from_image(video.eval(), image.state_dict())
    x, c = torch.randn(2, 3, 3, 32, 32), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        out = video(x, c, Cond(known=torch.randn(2, 3, 4, 32, 32)))
        per_frame = image(x.flatten(0, 1), c.repeat_interleave(3))
    torch.testing.assert_close(out.flatten(0, 1), per_frame, rtol=0, atol=1e-5)


def test_training_gives_the_net_the_known_frames_and_a_mask_exactly_on_them():
    cfg = TrainConfig(data=DataConfig(name="fashion-clips", known_frames="first,random,none"))
    clips = torch.rand(64, FRAMES, 3, 32, 32) * 2 - 1
    cond = clip_cond(cfg, Batch(clips, None, None), torch.Generator().manual_seed(0))
    mask = cond.known[:, :, 3]  # (B, F, H, W)
    given = mask[:, :, 0, 0] == 1
    assert set(mask.unique().tolist()) == {0.0, 1.0} and (mask == given[..., None, None]).all()
    assert torch.equal(cond.known[:, :, :3], clips * given[:, :, None, None, None])
    first = given[:, 0] & ~given[:, 1:].any(1)
    counts = given.sum(1)
    assert first.any() and (counts == 0).any() and (counts >= 2).any()  # all three modes
    net = build_net(preset("video-unet-tiny", model_channels=8, num_frames=FRAMES,
                           known_frames=True))  # fmt: skip
    seen = []
    net.input_conv().register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    net(clips[:4], torch.zeros(4), cond.index(slice(0, 4)))
    h = seen[0].unflatten(0, (4, FRAMES))  # (B, F, C + C + 1, H, W): x_t, frames, mask
    assert torch.equal(h[:, :, 6], mask[:4]) and torch.equal(h[:, :, 3:6], cond.known[:4, :, :3])


def test_one_mode_alone_and_image_share_reveal_nothing_on_image_clips():
    cfg = TrainConfig(data=DataConfig(name="fashion-clips", known_frames="first", image_share=0.5))
    cond = clip_cond(cfg, Batch(torch.zeros(32, 3, 1, 8, 8), None, None), torch.Generator())
    given = cond.known[:, :, 1, 0, 0] == 1
    assert torch.equal(given[:, 0], ~cond.independent_frames) and not given[:, 1:].any()
    with pytest.raises(ValueError, match="first, random, none"):
        DataConfig(known_frames="last")


def replaced(data, schedule, resample: int, steps: int, spy=None):
    v = torch.linspace(-1, 1, 64, dtype=torch.float64).reshape(1, 1, 8, 8)
    denoiser = data.exact_denoiser(schedule)
    if spy is not None:
        exact, denoiser = denoiser, spy(denoiser)
        denoiser.schedule = exact.schedule
    known = KnownFrames(v, (0,), "replace", resample, paste=False)
    x = draw_known(
        denoiser, known, (128, data.frames, 1, 8, 8), Sampling(sampler="ddpm", steps=steps),
        cond=None, seed=0, device="cpu", dtype=torch.float64, progress=False,
    )  # fmt: skip
    slopes = [float((x[:, j] * v).sum() / (v**2).sum() / x.shape[0]) for j in range(data.frames)]
    return x, v, slopes


def test_replacement_keeps_the_known_frame_on_its_forward_path_at_every_step():
    data, schedule = FrameCorrelatedGaussian(frames=FRAMES, rho=0.8), get_schedule("cosine")
    calls = []

    class Spy:
        def __init__(self, den):
            self.den = den

        def __call__(self, x, t, cond=None):
            calls.append((x[:, 0].clone(), torch.as_tensor(t, dtype=torch.float64)))
            return self.den(x, t, cond)

    x, v, _ = replaced(data, schedule, 1, 10, spy=Spy)
    assert len(calls) == 10
    for x_t, t in calls:  # x_t of the known frame ~ q(x_t | x0) = N(alpha v, sigma^2)
        c = schedule.coefs(t.reshape(1), 2)
        z = (x_t - c.alpha * v) / c.sigma
        assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    # the last step replaces it by q(x_0 | x0) = x0: exact without the final paste
    psnr = 10 * torch.log10(4 / ((x[:, 0] - v) ** 2).mean().clamp_min(1e-20))
    assert psnr > 60, psnr


def test_replacement_with_resampling_approaches_the_gaussian_conditional_mean():
    """E[x_j | x_0] = rho^j x_0 for the AR(1) clip oracle. Plain replacement (R = 1)
    under-correlates the generated frames, as Ho et al. 2022a (Sec. 3.1) find for the
    replacement method; RePaint's resampling (Lugmayr et al. 2022) closes most of the gap."""
    data, schedule = FrameCorrelatedGaussian(frames=FRAMES, rho=0.8), get_schedule("cosine")
    exact = [0.8**j for j in range(FRAMES)]
    plain = replaced(data, schedule, 1, 20)[2]
    resampled = replaced(data, schedule, 20, 20)[2]
    err_plain = max(abs(s - e) for s, e in zip(plain, exact, strict=True))
    err_resampled = max(abs(s - e) for s, e in zip(resampled, exact, strict=True))
    assert err_resampled < 0.5 * err_plain
    assert abs(resampled[1] - 0.8) < 0.12 and resampled[0] == pytest.approx(1.0, abs=1e-6)
    # the regression slope decays with the distance to the known frame
    assert all(a > b for a, b in zip(resampled, resampled[1:], strict=False))


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 1-step text-to-video run trained with known frames (k), and one without (p)."""
    root = tmp_path_factory.mktemp("known")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXDIFF_CACHE", str(root / "cache"))
        known = ["--set", "data.known_frames=first,random,none"]
        assert main(["train", *TINY, *known, "--out", str(root / "k")]) == 0
        assert main(["train", *TINY, "--out", str(root / "p")]) == 0
    frame = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(frame).save(root / "first.png")
    Image.fromarray(frame[:16, :16]).save(root / "small.png")
    return root


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, err
    return lines[0]


def test_sample_first_frame_writes_clips_that_start_with_it(runs: Path, tmp_path, capsys):
    out = tmp_path / "o"
    code, err = cli(capsys, "sample", runs / "k", "--prompt", "sneaker moving left", "-n", "2",
                    "--first-frame", runs / "first.png", "--steps", "2", "--out", out,
                    "--no-progress")  # fmt: skip
    assert code == 0, err
    given = np.asarray(Image.open(runs / "first.png"))
    for name in ("000000.gif", "000001.gif"):
        clip = read_clip_file(out / name)
        assert clip.shape == (FRAMES, 3, 32, 32)
        first = np.asarray(Image.open(out / name).convert("L"))
        assert np.array_equal(first, given)
    extended = tmp_path / "ext"  # extension: the first two frames of a clip, then new ones
    code, err = cli(capsys, "sample", runs / "p", "--known-frames", out / "000000.gif",
                    "--known-index", "0,1", "--known-mode", "replace", "--resample", "2",
                    "--steps", "2", "--out", extended, "--no-progress")  # fmt: skip
    assert code == 0, err
    torch.testing.assert_close(
        read_clip_file(extended / "000000.gif")[:2], read_clip_file(out / "000000.gif")[:2]
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--first-frame", "small.png"], "small.png is 16x16, but --first-frame"),
        (["--first-frame", "first.png", "--known-index", "4"], "--known-index 4: the clip has 4"),
        (["--known-index", "1"], "--known-index needs --first-frame"),
    ],
)
def test_bad_known_frames_are_one_line(runs, tmp_path, capsys, flags, expected):
    flags = [str(runs / f) if f.endswith(".png") else f for f in flags]
    code, err = cli(capsys, "sample", runs / "k", *flags, "--steps", "1", "--out", tmp_path / "o",
                    "--no-progress")  # fmt: skip
    assert code != 0 and expected in one_line(err)


def test_a_run_without_known_frames_names_replace(runs, tmp_path, capsys):
    code, err = cli(capsys, "sample", runs / "p", "--first-frame", runs / "first.png",
                    "--steps", "1", "--out", tmp_path / "o", "--no-progress")  # fmt: skip
    line = one_line(err)
    assert code != 0 and "not trained with known frames" in line and "--known-mode replace" in line
