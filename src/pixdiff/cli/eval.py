"""``pixdiff eval``: sample quality (FD, KID, precision/recall, IS, class accuracy) and bits/dim."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pixdiff.cli.flags import (
    add_device_flag,
    add_dtype_flag,
    add_num_flag,
    add_run_argument,
    finite,
    int_in,
    load_model,
    positive,
    seed,
)
from pixdiff.data import load_dataset, to_model_space
from pixdiff.eval.features import DEFAULT_EXTRACTOR, load_extractor
from pixdiff.eval.likelihood import default_variance, vlb_bpd
from pixdiff.eval.ode_likelihood import ode_bpd
from pixdiff.eval.reference import reference_stats
from pixdiff.eval.report import (
    LIKELIHOOD_METRICS,
    METRICS,
    SAMPLE_METRICS,
    SampleSpec,
    draw_samples,
    eval_header,
    format_table,
    parse_metrics,
    score_images,
)
from pixdiff.eval.video import VIDEO_METRICS, parse_video_metrics
from pixdiff.eval.video_report import score_video_model
from pixdiff.files import atomic_write
from pixdiff.pipelines.steering import null_cond
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import default_spacing
from pixdiff.timesteps import SPACINGS

DEFAULT_METRICS = "fd,kid,pr,acc"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model: FD, KID, precision/recall, IS, class accuracy, bits/dim",
        description="Draw -n samples (class-balanced for a conditional model), score them "
        "against real images of the run's dataset through a feature extractor, print a table "
        "and write it as JSON. Metrics: fd (Frechet distance), kid (kernel inception "
        "distance, with its std), pr (precision and recall, k = 3), is (Inception-Score-style "
        "score of the extractor's classes), acc (fraction of samples classified as their "
        "class), bpd (bits/dim on --bpd-n real test images: the variational bound for "
        "discrete schedules, or the probability-flow ODE with --bpd-method ode).",
    )
    add_run_argument(p)
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated metrics from: {', '.join(METRICS)} (default: {DEFAULT_METRICS}; "
        "without acc for an extractor that has no classes, such as inception); for a video "
        f"run: {', '.join(VIDEO_METRICS)}, all of them unless given (docs/video.md)",
    )
    add_num_flag(p, default=10000, help="number of samples (and real images), >= 2", old_n=True)
    p.add_argument("--sampler", default=None, choices=sorted(SAMPLERS), help="default: the run's")
    p.add_argument(
        "--steps", type=positive, default=None, help="sampler steps (default: the run's)"
    )
    p.add_argument(
        "--grid", default=None, choices=SPACINGS, help="time grid (default: by schedule)"
    )
    p.add_argument(
        "--guidance",
        type=finite,
        default=None,
        help="classifier-free guidance w for conditional models (default: the run's)",
    )
    p.add_argument(
        "--extractor",
        default=DEFAULT_EXTRACTOR,
        help="feature extractor: 'fashion-classifier', 'inception' (standard FID: needs "
        "--weights), a TorchScript file or a classifier dir; images of any size are resized "
        "to its input (docs/concepts.md, 'Standard FID')",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="--extractor inception: the Inception-v3 FID weights, the released .pth or its "
        "conversion by `pixdiff convert-inception` (default: $PIXDIFF_INCEPTION_WEIGHTS)",
    )
    p.add_argument(
        "--data", default=None, help="real data to compare with (default: the run's dataset)"
    )
    p.add_argument("--split", default="test", choices=("train", "test"), help="real data split")
    p.add_argument(
        "--floor",
        action="store_true",
        help="also score -n real images of the other split: the real-against-real floor",
    )
    p.add_argument("--bpd-n", type=positive, default=100, help="real images (of --split) for bpd")
    p.add_argument(
        "--bpd-method",
        default="bound",
        choices=("bound", "ode"),
        help="bound: the DDPM variational bound (discrete schedules); ode: the exact NLL "
        "through the probability-flow ODE (any schedule; Hutchinson trace, dequantized)",
    )
    p.add_argument(
        "--bpd-variance",
        default=None,
        choices=("small", "large", "learned"),
        help="bound: the reverse-process variance (default: learned for learned-variance "
        "models, else small)",
    )
    p.add_argument(
        "--bpd-t-samples",
        type=int_in(0),
        default=0,
        help="bound: timesteps sampled per image (importance-sampled estimate); 0 sums all T",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed; sample i uses seed + i")
    p.add_argument("--batch-size", type=positive, default=250, help="images per batch")
    p.add_argument("--out", default=None, help="JSON file (default: RUN/eval.json or out/)")
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    add_device_flag(p)
    add_dtype_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    video_metrics = _video_metrics(args.metrics)
    metrics = [] if video_metrics else parse_metrics(args.metrics or DEFAULT_METRICS)
    if args.num < 2:
        raise ValueError(f"-n must be >= 2, got {args.num}")
    model = load_model(args.run, ema=not args.raw, device=args.device)
    train_cfg = model.config["train"]
    dataset = args.data or train_cfg["data"]["name"]
    spec = _sample_spec(args, train_cfg)
    if video_metrics or len(model.image_shape) == 4:  # a video run: (F, C, H, W) samples
        return _run_video(args, model, dataset, spec, video_metrics)
    results: dict = {
        "run": args.run or "shipped",
        "dataset": dataset,
        "split": args.split,
        "sampler": spec.sampler,
        "steps": spec.steps,
        "grid": args.grid or default_spacing(model.denoiser.schedule),
        "n": args.num,
        "seed": args.seed,
        "dtype": args.dtype,
        "guidance": None
        if not model.num_classes
        else train_cfg["sample"]["guidance"]
        if args.guidance is None
        else args.guidance,
        "extractor": args.extractor,
        "metrics": {},
    }
    start = time.perf_counter()
    sample_metrics = [m for m in metrics if m in SAMPLE_METRICS]
    if sample_metrics:
        extractor = load_extractor(
            args.extractor, weights=args.weights, batch_size=args.batch_size, device=args.device
        )
        _check_shape(extractor, model.image_shape, args.extractor)
        if args.metrics is None and extractor.num_classes is None:
            sample_metrics.remove("acc")  # the default asks for acc only where it exists
        reference = reference_stats(dataset, args.split, extractor, image_shape=model.image_shape)
        x, labels = draw_samples(model, spec)
        results["metrics"]["samples"] = score_images(
            x, labels, reference, extractor, sample_metrics, seed=args.seed
        )
        if args.floor:
            results["metrics"]["real_floor"] = _floor(
                dataset, args.split, args.num, extractor, reference, sample_metrics, args.seed,
                model.image_shape,
            )  # fmt: skip
    if any(m in LIKELIHOOD_METRICS for m in metrics):
        results["metrics"]["bpd"] = _bits_per_dim(model, dataset, args)
    results["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out) if args.out else _default_out(args.run)
    atomic_write(out, (json.dumps(results, indent=2) + "\n").encode())
    print(eval_header(results))
    for name, values in results["metrics"].items():
        print(f"[{name}]")
        print(format_table(values))
    print(f"wrote {out}")
    return 0


def _sample_spec(args, train_cfg: dict) -> SampleSpec:
    """How the scored samples are drawn: the flags, else the run's sampling settings."""
    return SampleSpec(
        n=args.num,
        sampler=args.sampler or train_cfg["sample"]["sampler"],
        steps=args.steps or train_cfg["sample"]["steps"],
        guidance=args.guidance,  # None: the run's, where a class steers
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        spacing=args.grid,
        net_dtype=args.dtype,
    )


def _video_metrics(text: str | None) -> list[str]:
    """The video metrics asked for (docs/video.md, "Evaluation"), else []; a mix of video and
    image metrics is refused by :func:`parse_video_metrics` with the valid names."""
    names = [m.strip().lower() for m in (text or "").split(",")]
    return parse_video_metrics(text) if any(m in VIDEO_METRICS for m in names) else []


def _run_video(args, model, dataset: str, spec: SampleSpec, metrics: list[str]) -> int:
    """Score a video run's clips for held-out captions (``score_video_model``), print, write."""
    if not metrics:  # a video run's default: all of them (motion needs captions)
        text = model.text_encoder is not None
        metrics = [m for m in VIDEO_METRICS if m != "motion" or text]
    start = time.perf_counter()
    results = {
        "run": args.run or "shipped", "dataset": dataset, "split": "test (held-out pairs)",
        "sampler": spec.sampler, "steps": spec.steps,
        "grid": args.grid or default_spacing(model.denoiser.schedule), "n": args.num,
        "seed": args.seed, "dtype": args.dtype,
        "guidance": args.guidance if args.guidance is not None
        else model.config["train"]["sample"].get("guidance"),
        "extractor": "motion-classifier (clips) + the data's image extractor (frames)",
        "metrics": {"clips": score_video_model(model, dataset, spec, metrics)},
    }  # fmt: skip
    results["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out) if args.out else _default_out(args.run)
    atomic_write(out, (json.dumps(results, indent=2) + "\n").encode())
    print(eval_header(results))
    print("[clips]\n" + format_table(results["metrics"]["clips"]))
    print(f"wrote {out}")
    return 0


def _check_shape(extractor, image_shape, name: str) -> None:
    """Any image size is resized to the extractor's input; refuse channels that do not convert."""
    extractor.check_convertible(
        image_shape, who=f"extractor {name!r}", fix="pass --extractor for this data"
    )


def _floor(dataset, split, n, extractor, reference, metrics, seed, shape) -> dict[str, float]:
    """The same metrics for n real images (C, H, W = ``shape``, the model's) of the other split
    against the reference."""
    other = "train" if split == "test" else "test"
    c, h, _ = shape
    data = load_dataset(dataset, image_size=h, channels=c, split=other)
    if n > len(data):
        raise ValueError(f"--floor needs {n} real images; {dataset} {other} has {len(data)}")
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    labels = data.labels[pick] if data.labels is not None else None
    metrics = [m for m in metrics if m != "acc" or labels is not None]
    out = score_images(data.images[pick], labels, reference, extractor, metrics, seed=seed)
    return {"split": other, **out}


def _bits_per_dim(model, dataset: str, args) -> dict[str, float]:
    """Bits/dim of --bpd-n real images (a fixed random subset), unconditional (see
    ``null_cond``): the DDPM bound or the probability-flow ODE."""
    c, h, _ = model.image_shape
    data = load_dataset(dataset, image_size=h, channels=c, split=args.split)
    n = min(args.bpd_n, len(data))
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:n]
    images = to_model_space(data.images[pick]).to(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    parts, extra = [], {}
    chunks = range(0, n, args.batch_size)
    for start in tqdm(chunks, desc=f"bpd ({args.bpd_method})", disable=args.no_progress):
        x = images[start : start + args.batch_size]
        cond = null_cond(model, len(x))
        cond = cond.to(x.device) if cond is not None else None
        if args.bpd_method == "ode":
            res = ode_bpd(model.denoiser, x, cond=cond, generator=generator)
            extra["nfe"] = extra.get("nfe", 0) + res.nfe
        else:
            k = args.bpd_t_samples or None
            res = vlb_bpd(
                model.denoiser,
                x,
                cond=cond,
                num_t_samples=k,
                variance=args.bpd_variance,
                batch_size=args.batch_size,
                generator=generator,
            )
            for name in ("prior", "decoder", "kl"):
                extra.setdefault(name, []).append(getattr(res, name))
        parts.append(res.bpd)
    bpd = torch.cat(parts).double()
    out = {
        "method": args.bpd_method,
        "variance": (args.bpd_variance or default_variance(model.denoiser))
        if args.bpd_method == "bound"
        else None,
        "n": n,
        "bpd": bpd.mean().item(),
        "stderr": (bpd.std() / n**0.5).item() if n > 1 else float("nan"),
    }
    for name, value in extra.items():
        out[name] = value if name == "nfe" else torch.cat(value).double().mean().item()
    return out


def _default_out(run: str | None) -> Path:
    if run is not None and Path(run).is_dir():
        return Path(run) / "eval.json"
    return Path("out") / "eval.json"
