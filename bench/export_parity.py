"""How closely the exports of the shipped Fashion-MNIST model reproduce pixdiff (issue #22).

- diffusers: ``pixdiff export fashion --to diffusers`` loaded by ``UNet2DModel.from_pretrained``
  and ``DDIMScheduler.from_pretrained``, sampled by diffusers' own DDIM loop with classifier-free
  guidance, against pixdiff's DDIM on the same noise (the run's 50 steps, guidance 2, trailing).
- round trip: the exported folder loaded back by ``pixdiff.load`` against the original.
- TorchScript and ONNX (onnxruntime): the network's output on fixed inputs, at a batch size
  other than the traced one.

Prints the largest absolute difference of each (images and network outputs in [-1, 1] units).

    .venv/bin/python bench/export_parity.py --n 8 --steps 50
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from diffusers import DDIMScheduler, UNet2DModel

import pixdiff
from pixdiff.formats.diffusers_export import export_diffusers
from pixdiff.formats.graphs import (
    GraphNet,
    example_inputs,
    export_onnx,
    export_torchscript,
    graph_inputs,
)
from pixdiff.samplers import per_sample_generators, randn


def diffusers_ddim(folder: Path, noise, labels, null: int, guidance: float, steps: int):
    """diffusers' DDIM loop with classifier-free guidance on the exported folder."""
    unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True).eval()
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            both = torch.cat([labels, torch.full_like(labels, null)])
            cond, uncond = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return x.clamp(-1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="images (classes 0, 1, ...)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    args = p.parse_args()
    model = pixdiff.load("fashion")
    guidance = model.config["train"]["sample"]["guidance"]
    labels = torch.arange(args.n) % model.num_classes
    ours = model.generate(classes=labels.tolist(), steps=args.steps, grid="trailing",
                          guidance=guidance, output="tensor")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fashion-diffusers"
        export_diffusers(model, folder)
        noise = randn((args.n, *model.image_shape), per_sample_generators(0, args.n))
        theirs = diffusers_ddim(folder, noise, labels, model.num_classes, guidance, args.steps)
        back = pixdiff.load(folder).generate(classes=labels.tolist(), steps=args.steps,
                                             guidance=guidance, output="tensor")  # fmt: skip
        print(f"diffusers DDIM vs pixdiff ({args.n} images, {args.steps} steps, guidance "
              f"{guidance}): max |diff| {(theirs - ours).abs().max():.2e}")  # fmt: skip
        print(f"pixdiff -> diffusers -> pixdiff: max |diff| {(back - ours).abs().max():.2e}")
        args3 = example_inputs(model, 3)
        with torch.no_grad():
            native = GraphNet(model.net, graph_inputs(model)).eval()(*args3)
            export_torchscript(model, Path(tmp) / "m.pt")
            scripted = torch.jit.load(Path(tmp) / "m.pt")(*args3)
        names = export_onnx(model, Path(tmp) / "m.onnx")
        session = onnxruntime.InferenceSession(str(Path(tmp) / "m.onnx"))
        feeds = {k: a.numpy() for k, a in zip(names, args3, strict=True)}
        (onnx_out,) = session.run(["out"], feeds)
        print(f"TorchScript vs native net: max |diff| {(scripted - native).abs().max():.2e}")
        print(f"ONNX (onnxruntime) vs native net: max |diff| "
              f"{np.abs(onnx_out - native.numpy()).max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
