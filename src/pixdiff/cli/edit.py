"""``pixdiff edit``, ``pixdiff inpaint`` and ``pixdiff upscale``: image-to-image commands.

Each reads one input image (a mode other than the model's grey/RGB is converted with a warning;
a size other than the model's is refused), makes -n variations of it and writes them as
``pixdiff sample`` does.
"""

from __future__ import annotations

import argparse

from torch import Tensor

from pixdiff.checkpoint import LoadedModel
from pixdiff.cli import flags
from pixdiff.cli.output import image_names, open_output, settings_of
from pixdiff.cli.steering_flags import add_conditioning_flags, steering
from pixdiff.images import read_image, read_mask
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.edit import img2img, inpaint

COMMANDS = {
    "edit": (
        "img2img / SDEdit: re-imagine an image",
        "SDEdit (Meng et al. 2022): noise the input to time t = --strength on the sampling "
        "grid, then denoise over the rest of the grid.",
    ),
    "inpaint": (
        "fill a masked region of an image",
        "Inpainting: at every step the known region is replaced by a forward-noised copy of the "
        "input; --resample R > 1 adds RePaint's resampling (Lugmayr et al. 2022).",
    ),
    "upscale": (
        "super-resolve an image with a super-resolution run",
        "Upscale a low-resolution image with a run trained with --sr-from (SR3, Saharia et al. "
        "2021; noise conditioning augmentation, Ho et al. 2022).",
    ),
}


def _parser(sub, name: str, func) -> argparse.ArgumentParser:
    """The command's parser with RUN and --input; the caller adds its own flags."""
    help_, description = COMMANDS[name]
    p = sub.add_parser(
        name,
        help=help_,
        description=description + " Writes grid.png and one PNG per image into --out.",
    )
    p.add_argument("run", help="run directory or .safetensors checkpoint")
    p.add_argument(
        "--input",
        required=True,
        metavar="IMAGE",
        help="input image file, of the model's input size (a different size is refused; "
        "another mode is converted to grey/RGB with a warning, transparency on white)",
    )
    flags.add_num_flag(p, default=1, help="variations of the input to make")
    p.set_defaults(func=func)
    return p


def add_parsers(sub) -> None:
    strength = "time in [0, 1] the input is noised to: 0 returns it unchanged, 1 ignores it"
    p = _parser(sub, "edit", run_edit)
    p.add_argument("--strength", type=float, required=True, metavar="S", help=strength)
    _add_common(p, "edit")
    mask = "mask image of the input's size: white (>= 128) = fill, black = keep"
    p = _parser(sub, "inpaint", run_inpaint)
    p.add_argument("--mask", required=True, metavar="MASK", help=mask)
    flags.add_resample_flag(p)
    _add_common(p, "inpaint")
    aug = (
        "noise conditioning augmentation time in [0, 1] of the input; None: the run's "
        "sr.aug_level (0.2 unless trained otherwise). 0 trusts the input exactly"
    )
    p = _parser(sub, "upscale", run_upscale)
    p.add_argument("--aug-level", type=float, default=None, metavar="T", help=aug)
    _add_common(p, "upscale")


def _add_common(p, command: str) -> None:
    flags.add_sampler_flags(p)
    add_conditioning_flags(p)
    flags.add_output_flags(p, command=command)


def _model_and_input(args, *, sr: bool) -> tuple[LoadedModel, Tensor]:
    """The run (a super-resolution one when ``sr``) and its (num, C, h, w) input on the
    device."""
    model = flags.load_model(args.run, ema=not args.raw, device=args.device)
    if args.num < 1:
        raise ValueError(f"-n must be >= 1, got {args.num}")
    if sr and model.sr is None:
        raise ValueError(
            f"{model.path} is not a super-resolution model (trained without --sr-from)"
        )
    if not sr and model.sr is not None:
        raise ValueError(
            f"{model.path} is a super-resolution model: use `pixdiff upscale`, or give a base run"
        )
    size = model.sr.low_res_size if sr else model.image_shape[-1]
    x = read_image(args.input, size=size, channels=model.image_shape[0], who=str(model.path))
    return model, x.to(args.device).expand(args.num, -1, -1, -1)


def _guided(args, model: LoadedModel):
    """(cond on the device, guided denoiser) from the conditioning flags."""
    resolved = steering(args).resolve(model, args.num)
    cond = resolved.cond
    return (None if cond is None else cond.to(args.device)), resolved.denoiser


def _output(args, command: str, model: LoadedModel):
    """The command's claimed output directory, with its settings (see pixdiff.cli.output)."""
    sampling = flags.sampling(args)
    settings = settings_of(
        args, run=str(model.path), sampler=sampling.sampler, steps=sampling.steps,
        grid=sampling.spacing, seed=args.seed, seeds=flags.seeds(args),
    )  # fmt: skip
    return open_output(args, command=command, settings=settings, names=image_names(args.num))


def _write(args, out, x, what: str) -> int:
    grid = out.write_images(x)
    print(f"wrote {args.num} {what} image(s) ({args.sampler}, {args.steps} steps); grid: {grid}")
    return 0


def run_edit(args) -> int:
    model, x0 = _model_and_input(args, sr=False)
    cond, den = _guided(args, model)
    with _output(args, "edit", model) as out:
        x = img2img(
            den, x0, strength=args.strength, sampling=flags.sampling(args), cond=cond,
            seed=args.seed, progress=not args.no_progress,
        )  # fmt: skip
        return _write(args, out, x, f"edited (strength {args.strength:g})")


def run_inpaint(args) -> int:
    model, x0 = _model_and_input(args, sr=False)
    known = read_mask(args.mask, size=model.image_shape[-1], image=args.input).to(args.device)
    cond, den = _guided(args, model)
    with _output(args, "inpaint", model) as out:
        x = inpaint(
            den, x0, known, resample=args.resample, sampling=flags.sampling(args), cond=cond,
            seed=args.seed, progress=not args.no_progress,
        )  # fmt: skip
        return _write(args, out, x, "inpainted")


def run_upscale(args) -> int:
    model, low_res = _model_and_input(args, sr=True)
    stage = Stage(model, sampling=flags.sampling(args), aug_level=args.aug_level)
    with _output(args, "upscale", model) as out:
        x = cascade(
            [stage], steering(args), low_res=low_res, seed=args.seed, device=args.device,
            progress=not args.no_progress,
        )[-1]  # fmt: skip
        return _write(args, out, x, f"upscaled ({low_res.shape[-1]} -> {x.shape[-1]})")
