"""The issue's round trips: the shipped Fashion-MNIST model exported for diffusers samples in
diffusers' own DDIM loop what pixdiff samples, and comes back into pixdiff unchanged; a
diffusers folder samples in pixdiff as in diffusers, its clip_sample and spacing included."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from diffusers_helpers import diffusers, diffusers_ddim, randomized, save_pipeline, tiny_unet2d

import pixdiff
from pixdiff.checkpoint import CheckpointError
from pixdiff.cli.main import main
from pixdiff.conditioning import Cond
from pixdiff.formats.diffusers_export import export_diffusers
from pixdiff.interop import DiffusersUNet
from pixdiff.nets import DiT, UNet, preset
from pixdiff.pipelines.model import Model, Request
from pixdiff.samplers import per_sample_generators, randn

STEPS, N = 10, 4


@pytest.fixture(scope="module")
def fashion():
    return pixdiff.load("fashion")


@pytest.fixture(scope="module")
def exported(fashion, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "fashion-diffusers"
    assert export_diffusers(fashion, folder) == "UNet2DModel"
    return folder


def _noise(n: int, shape) -> torch.Tensor:
    """The initial noise pixdiff draws for seeds 0 .. n-1."""
    return randn((n, *shape), per_sample_generators(0, n))


def test_fashion_samples_the_same_in_diffusers_ddim(fashion, exported):
    unet = diffusers.UNet2DModel.from_pretrained(exported / "unet", use_safetensors=True).eval()
    scheduler = diffusers.DDIMScheduler.from_pretrained(exported / "scheduler")
    labels = torch.arange(N)
    theirs = diffusers_ddim(unet, scheduler, _noise(N, (1, 28, 28)), STEPS, labels=labels,
                            null=fashion.num_classes, guidance=2.0)  # fmt: skip
    ours = fashion.generate(classes=labels.tolist(), steps=STEPS, grid="trailing", output="tensor")
    torch.testing.assert_close(theirs.clamp(-1, 1), ours, atol=1e-4, rtol=0)


def test_fashion_comes_back_from_diffusers_unchanged(fashion, exported):
    back = pixdiff.load(exported)
    assert type(back.net) is UNet and back.class_names == fashion.class_names
    assert all(
        torch.equal(v, back.net.state_dict()[k]) for k, v in fashion.net.state_dict().items()
    )
    # the scheduler's trailing spacing is the folder's default grid, as it is pixdiff's
    ours = fashion.generate(classes="all", n=N, steps=STEPS, grid="trailing", output="tensor")
    torch.testing.assert_close(back.generate(classes="all", n=N, steps=STEPS, output="tensor"),
                               ours, atol=1e-6, rtol=0)  # fmt: skip


def test_clip_sample_and_leading_spacing_are_honoured(tmp_path):
    """An untrained diffusers UNet with DDIMScheduler's defaults (clip_sample on, leading
    spacing): pixdiff samples what diffusers does and stays in [-1, 1]; unclipped it leaves."""
    unet = tiny_unet2d()
    folder = save_pipeline(tmp_path / "pipe", unet)
    model = pixdiff.load(folder)
    assert type(model.net) is UNet and model.denoiser.clip_x0 == 1.0
    ours = model.draw(Request(n=3, steps=STEPS), seed=0, batch_size=3, progress=False)
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    theirs = diffusers_ddim(unet, scheduler, _noise(3, (3, 8, 8)), STEPS)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert ours.abs().max() <= 1.0
    model.denoiser.clip_x0 = None
    unclipped = model.draw(Request(n=3, steps=STEPS), seed=0, batch_size=3, progress=False)
    assert unclipped.abs().max() > 2.0


def test_import_writes_a_run_that_samples_the_same(tmp_path, capsys):
    folder = save_pipeline(
        tmp_path / "pipe",
        tiny_unet2d(),
        {
            "prediction_type": "v_prediction",
            "beta_schedule": "squaredcos_cap_v2",
            "timestep_spacing": "linspace",
        },
    )
    assert main(["import", str(folder), "--out", str(tmp_path / "run")]) == 0
    assert "v-prediction, linspace grid, x0 clip [-1.0, 1.0]" in capsys.readouterr().out
    run, direct = pixdiff.load(tmp_path / "run"), pixdiff.load(folder)
    request = Request(n=2, steps=4)
    torch.testing.assert_close(
        run.draw(request, seed=3, batch_size=2, progress=False),
        direct.draw(request, seed=3, batch_size=2, progress=False),
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["sampling"] == {
        "spacing": "linspace", "clip_x0": 1.0}  # fmt: skip


def test_pickle_weights_load_only_when_allowed(tmp_path):
    unet = tiny_unet2d()
    folder = save_pipeline(tmp_path / "pipe", unet, safe=False)
    with pytest.raises(CheckpointError, match=r"only diffusion_pytorch_model.bin, a pickle.*"
                       r"--allow-pickle"):  # fmt: skip
        pixdiff.load(folder)
    assert main(["sample", str(folder), "-n", "1", "--out", str(tmp_path / "o")]) == 2
    model = pixdiff.load(folder, allow_pickle=True)
    assert torch.equal(model.net.out[2].weight, unet.state_dict()["conv_out.weight"])


def test_a_unet2dmodel_without_counterpart_samples_through_diffusers(tmp_path, capsys):
    unet = tiny_unet2d(flip_sin_to_cos=False)  # not ADM's embedding: no pixdiff U-Net fits
    folder = save_pipeline(tmp_path / "pipe", unet, {"clip_sample": False})
    model = pixdiff.load(folder)
    assert isinstance(model.net, DiffusersUNet) and model.image_shape == (3, 8, 8)
    ours = model.draw(Request(n=2, steps=STEPS), seed=0, batch_size=2, progress=False)
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    theirs = diffusers_ddim(unet, scheduler, _noise(2, (3, 8, 8)), STEPS)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert main(["import", str(folder), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no pixdiff counterpart (UNet2DModel options ['flip_sin_to_cos']" in err
    assert len(err.strip().splitlines()) == 1


def _import_module(path):
    spec = importlib.util.spec_from_file_location("pixdiff_model_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_dit_exports_as_a_loadable_custom_model(tmp_path):
    net = randomized(DiT(preset("dit-tiny", num_classes=3)))
    model = Model.from_net(net, schedule="cosine", prediction="v", class_names=["a", "b", "c"])
    written = export_diffusers(model, tmp_path / "dit")
    assert written == "PixdiffModel, since UNet2DModel has no counterpart of a DiT"
    module = _import_module(tmp_path / "dit" / "pixdiff_model.py")
    theirs = module.PixdiffModel.from_pretrained(tmp_path / "dit" / "unet", use_safetensors=True)
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    with torch.no_grad():  # diffusers' index i is pixdiff's t = (i + 1) / T: c_noise = i
        out = theirs.eval()(x, torch.tensor([999, 17]), class_labels=labels).sample
        torch.testing.assert_close(out, net(x, torch.tensor([999.0, 17.0]), Cond(label=labels)))
    back = pixdiff.load(tmp_path / "dit")
    assert type(back.net) is DiT and back.class_names == ["a", "b", "c"]
    assert all(torch.equal(v, back.net.state_dict()[k]) for k, v in net.state_dict().items())


def test_a_continuous_time_unet_maps_the_timestep_index(tmp_path):
    net = randomized(UNet(preset("unet-tiny")))
    model = Model.from_net(net, schedule="vp-cosine", prediction="eps")
    assert "continuous time" in export_diffusers(model, tmp_path / "vp")
    module = _import_module(tmp_path / "vp" / "pixdiff_model.py")
    theirs = module.PixdiffModel.from_pretrained(tmp_path / "vp" / "unet").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # index i -> t = (i + 1) / 1000 -> the schedule's c_noise 1000 t
        torch.testing.assert_close(theirs(x, 499).sample, net(x, torch.tensor(500.0)))


def test_a_text_model_exports_with_its_encoder(tmp_path):
    model = pixdiff.load("emoji")
    export_diffusers(model, tmp_path / "emoji")
    module = _import_module(tmp_path / "emoji" / "pixdiff_model.py")
    theirs = module.PixdiffModel.from_pretrained(tmp_path / "emoji" / "unet").eval()
    ids, mask = theirs.encode_prompt(["red apple", ""])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = theirs(x, torch.tensor([700, 30]), input_ids=ids, attention_mask=mask).sample
        ours = model.net(x, torch.tensor([700.0, 30.0]), model.net.encode(["red apple", ""]))
    torch.testing.assert_close(out, ours)
    back = pixdiff.load(tmp_path / "emoji")  # and back, with its text encoder
    assert back.text_encoder is not None and back.config["net"] == model.config["net"]
    state = back.net.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.net.state_dict().items())


def test_folders_that_are_neither_say_so(tmp_path, capsys):
    with pytest.raises(CheckpointError, match=f"{tmp_path} is neither a pixdiff run .* nor a "
                       "diffusers model folder"):  # fmt: skip
        pixdiff.load(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ValueError, match="latent diffusion pipeline"):
        pixdiff.load(tmp_path)
