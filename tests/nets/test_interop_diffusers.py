"""pixdiff samplers drive a diffusers UNet2DModel saved to and loaded from a local folder."""

import json

import pytest
import torch

import pixdiff
from pixdiff.interop import load_diffusers_unet, schedule_from_diffusers

diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional interop extra")


@pytest.fixture
def pipeline_dir(tmp_path):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    unet.save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMScheduler",
                "beta_schedule": "squaredcos_cap_v2",
                "num_train_timesteps": 1000,
                "prediction_type": "v_prediction",
            }
        )
    )
    return tmp_path, unet


def test_load_and_sample_a_diffusers_unet(pipeline_dir):
    path, unet = pipeline_dir
    d = load_diffusers_unet(path)
    assert d.prediction == "v" and d.schedule.beta_kind == "cosine"
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.5, 0.25])
    with torch.no_grad():  # the adapter feeds the training timestep index, as diffusers does
        expected = unet(x, torch.tensor([499.0, 249.0])).sample
        torch.testing.assert_close(d.net(x, d.schedule.timestep(t).float()), expected)
    out = pixdiff.sample(d, (2, 3, 8, 8), sampler="ddim", steps=5, seed=0)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


def test_scheduler_mapping_and_errors(tmp_path):
    s, p = schedule_from_diffusers(
        {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "prediction_type": "epsilon",
        }
    )
    assert p == "eps" and s.beta_kind == "scaled-linear" and s.beta_end == 0.012
    with pytest.raises(ValueError, match="unsupported diffusers beta_schedule"):
        schedule_from_diffusers({"beta_schedule": "exp"})
    with pytest.raises(FileNotFoundError, match="not a saved UNet2DModel"):
        load_diffusers_unet(tmp_path, scheduler_config={})
