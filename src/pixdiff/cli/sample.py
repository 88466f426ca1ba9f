"""``pixdiff sample``: draw images from a run, the shipped models or a cascade."""

from __future__ import annotations

import torch

from pixdiff.cli import flags, parallel
from pixdiff.cli.cascade import add_cascade_flags, check_no_cascade_flags, run_cascade
from pixdiff.cli.control_flags import add_control_flags, load_controlled, with_control
from pixdiff.cli.known_flags import add_known_flags, with_known
from pixdiff.cli.lora_flags import add_lora_flags, with_loras
from pixdiff.cli.output import clip_names, image_names, open_output, settings_of
from pixdiff.cli.steering_flags import add_conditioning_flags, read_prompt_flags, steering
from pixdiff.images import make_grid, save_gif
from pixdiff.pipelines.generate import TrajectoryRecorder, generate


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate images from a trained model or a cascade",
        description="Generate images; writes grid.png and one PNG per image into --out. "
        "With --cascade BASE_RUN SR_RUN..., a base model's images are super-resolved by each "
        "SR run in turn (see docs/concepts.md, Super-resolution and cascades).",
    )
    flags.add_run_argument(p, text=True)
    flags.add_num_flag(p, default=64, help="number of images (with several prompts: for each)")
    flags.add_sampler_flags(p, run_defaults=True)
    parallel.add_parallel_flags(p)
    p.add_argument(
        "--nfe",
        type=int,
        default=None,
        metavar="BUDGET",
        help="network-evaluation budget: use the most steps of --sampler that fit "
        "(overrides --steps)",
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="keep the sampler state in float64 (reference solutions)",
    )
    add_conditioning_flags(p, several_prompts=True)
    add_cascade_flags(p)
    add_control_flags(p)
    add_lora_flags(p)
    p.add_argument("--batch-size", type=flags.positive, default=64, help="images per sampler batch")
    p.add_argument(
        "--frames",
        type=flags.positive,
        default=None,
        help="a video model's clip length (default: the frames it was trained on, also the "
        "most it makes); writes a GIF and an MP4 per clip and grid.png, a row of frames each",
    )
    p.add_argument("--fps", type=flags.positive, default=8, help="clips' frames per second")
    add_known_flags(p)
    p.add_argument(
        "--trajectory",
        action="store_true",
        help="also save trajectory.gif: x_t beside the predicted x0 at every step",
    )
    flags.add_output_flags(p, command="sample")
    flags.add_allow_pickle_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    read_prompt_flags(args)
    if args.cascade is not None:
        use_run_defaults(args, None)
        return run_cascade(args)
    check_no_cascade_flags(args)
    text = args.prompt is not None or args.negative_prompt is not None
    model = load_controlled(args, ema=not args.raw, device=args.device) or flags.load_model(
        args.run, ema=not args.raw, device=args.device, text=text, allow_pickle=args.allow_pickle
    )
    model = with_loras(args, model, ema=not args.raw, device=args.device)
    if model.sr is not None:
        raise ValueError(
            f"{model.path} is a super-resolution model ({model.sr.low_res_size} -> "
            f"{model.image_shape[-1]}): use `pixdiff upscale RUN --input IMAGE` or "
            "`pixdiff sample --cascade BASE_RUN RUN`"
        )
    if args.frames is not None:
        model = model.with_frames(args.frames)
    video = len(model.image_shape) == 4
    if video and args.trajectory:
        raise ValueError("--trajectory is for image models; a video model writes clips")
    use_run_defaults(args, model.config)
    recorder = TrajectoryRecorder(model.denoiser) if args.trajectory else None
    request = with_known(args, model, with_control(args, model, steering(args)))
    sampling = flags.sampling(args, run=model.path)
    n = flags.image_count(args)
    settings = settings_of(
        args, run=str(model.path), sampler=sampling.sampler, steps=sampling.steps,
        grid=sampling.times or sampling.spacing, guidance=request.resolve(model, n).scale,
        seed=args.seed,
        seeds=flags.seeds(args),
    )  # fmt: skip
    names = [*(clip_names(n) if video else image_names(n)), "trajectory.gif"]
    with open_output(args, command="sample", settings=settings, names=names) as out:
        x = generate(
            model, request, sampling, n=n, seed=args.seed, batch_size=args.batch_size,
            device=args.device, progress=not args.no_progress, recorder=recorder,
            dtype=torch.float64 if args.float64 else torch.float32,
        )  # fmt: skip
        if video:
            grid = out.write_clips(x, fps=args.fps)
            print(f"wrote {n} clips of {x.shape[1]} frames ({sampling.sampler}, "
                  f"{sampling.steps} steps); grid: {grid}")  # fmt: skip
        else:
            rows = flags.several_prompts(args)  # a grid row per prompt
            labels = request.resolve(model, n).labels  # or a grid row per class (--class all)
            grid = out.write_images(x, nrow=rows, rows=labels)
            print(f"wrote {n} images ({sampling.sampler}, {sampling.steps} steps); grid: {grid}")
        if sampling.parallel is not None:
            n = sampling.parallel.stats
            rounds = f"{n['rounds']} sequential rounds (sequential: {n['sequential']})"
            print(f"NFE {n['nfe']} in {rounds}")
        if recorder is not None:
            frames = [
                make_grid(torch.cat([xt[:8], x0[:8]]).clamp(-1, 1), nrow=min(8, len(xt)))
                for xt, x0 in recorder.frames
            ]
            gif = save_gif(frames, out.path / "trajectory.gif", scale=3)
            out.add(gif)
            print(f"also wrote {gif}")
    return 0


def use_run_defaults(args, config: dict | None) -> None:
    """Fill --sampler and --steps not given with the run's ``sample`` defaults (a distilled
    run's few steps), or DDIM and 50 steps without a run (a cascade: each stage's flags)."""
    sample = config["train"]["sample"] if config else {"sampler": "ddim", "steps": 50}
    args.sampler = args.sampler or sample["sampler"]
    args.steps = args.steps or sample["steps"]
