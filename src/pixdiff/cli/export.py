"""``pixdiff export`` and ``pixdiff import``: a run as a diffusers folder, a TorchScript or an
ONNX graph, and a diffusers folder as a run (docs/interop.md)."""

from __future__ import annotations

from pixdiff.cli import flags
from pixdiff.formats.diffusers_export import export_diffusers
from pixdiff.formats.diffusers_import import diffusers_layout
from pixdiff.formats.graphs import FORMATS, export_onnx, export_torchscript
from pixdiff.interop import DiffusersUNet
from pixdiff.pipelines.model import Model, load


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a run as a diffusers folder, a TorchScript file or an ONNX file",
        description="Write a run's network for other programs: --to diffusers DIR (a "
        "pipeline folder that diffusers' from_pretrained loads, with its scheduler config), "
        "--to torchscript FILE or --to onnx FILE (the network as a graph; class labels or "
        "prompt tokens are graph inputs). docs/interop.md shows how to load each.",
    )
    p.add_argument("run", help="run directory, checkpoint, shipped model name or diffusers folder")
    p.add_argument("--to", required=True, choices=FORMATS, help="what to write")
    p.add_argument("out", help="the folder (diffusers) or file (torchscript, onnx) to write")
    p.add_argument("--raw", action="store_true", help="export the raw (non-EMA) weights")
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "import",
        help="turn a diffusers UNet2DModel folder into a pixdiff run",
        description="Read a diffusers pipeline (or UNet2DModel) folder and write it as a "
        "pixdiff run directory, keeping its scheduler's betas, prediction type, timestep "
        "spacing and clip_sample. Only safetensors weights are read unless --allow-pickle.",
    )
    p.add_argument("folder", help="a local diffusers folder (model_index.json or unet/)")
    p.add_argument("--out", required=True, help="the run directory to write (new or empty)")
    flags.add_allow_pickle_flag(p)
    p.set_defaults(func=run_import)


def run_export(args) -> int:
    model = load(args.run, ema=not args.raw)
    if not isinstance(model, Model):
        raise ValueError(f"{args.run} is a cascade; export each of its runs on its own")
    if args.to == "diffusers":
        written = export_diffusers(model, args.out)
        print(f"wrote {args.out} (diffusers {written}); load it as in {args.out}/README.md")
        return 0
    write = export_torchscript if args.to == "torchscript" else export_onnx
    inputs = write(model, args.out)
    print(f"wrote {args.out} ({args.to}; inputs {', '.join(inputs)}; output out)")
    return 0


def run_import(args) -> int:
    if diffusers_layout(args.folder) is None:
        raise ValueError(
            f"{args.folder} is not a diffusers model folder (no model_index.json, "
            "unet/config.json, or config.json naming a diffusers class)"
        )
    model = load(args.folder, allow_pickle=args.allow_pickle)
    if isinstance(model.net, DiffusersUNet):
        reason = model.config["imported_from"].get("adapter", "")
        raise ValueError(
            f"{args.folder}: this UNet2DModel has no pixdiff counterpart ({reason}); "
            f"sample it in place with `pixdiff sample {args.folder}`"
        )
    model.save(args.out)
    sampling = model.config["sampling"]
    clip = sampling["clip_x0"]
    print(
        f"wrote run {args.out} ({model.denoiser.prediction}-prediction, "
        f"{sampling['spacing']} grid, x0 clip {'off' if clip is None else f'[-{clip}, {clip}]'})"
    )
    return 0
