"""pixdiff's DPM-Solver++(2M) and UniPC against diffusers' schedulers on the same weights.

Both drive the same network from the same per-sample noise; each is scored by its per-image
RMSE (pixels in [-1, 1]) to the float64 reference solution of ``pixdiff bench samplers`` (the
probability-flow ODE solved with 500 DPM-Solver++(2M) steps), reused from its --out folder when
it is there. Lower is better. Diffusers runs at its default grid ("linspace") and at pixdiff's
("trailing"); pixdiff runs at both too.

    .venv/bin/python bench/samplers_vs_diffusers.py --nfe 10 20 --out out/bench-samplers
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from pixdiff.checkpoint import LoadedModel
from pixdiff.cli.flags import load_model
from pixdiff.conditioning import Cond
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.eval.sampler_sweep import SweepRequest, draw, image_rmse, reference
from pixdiff.pipelines.steering import class_ids, class_names
from pixdiff.samplers.common import per_sample_generators, randn

PIXDIFF = {"dpmpp-2m": "dpmpp-2m", "unipc": "unipc-bh2"}


def diffusers_scheduler(kind: str, schedule: DiscreteSchedule, prediction: str, spacing: str):
    """The diffusers scheduler with the model's betas; solver options at diffusers' defaults."""
    common = {
        "num_train_timesteps": schedule.num_timesteps,
        "trained_betas": schedule.betas.tolist(),
        "prediction_type": {"v": "v_prediction", "eps": "epsilon", "x0": "sample"}[prediction],
        "timestep_spacing": spacing,
    }
    if kind == "dpmpp-2m":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)
    return UniPCMultistepScheduler(solver_order=2, solver_type="bh2", **common)


@torch.no_grad()
def sample_diffusers(model: LoadedModel, request: SweepRequest, scheduler, steps: int):
    """The diffusers loop: scale the noise, then net -> scheduler.step at each timestep."""
    x = randn(
        (request.n, *model.image_shape), per_sample_generators(request.seed, request.n)
    ) * float(scheduler.init_noise_sigma)
    cond = Cond(label=request.labels) if request.labels is not None else None
    net = model.denoiser.net
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        out = []
        for i in range(0, request.n, request.batch_size):
            part = slice(i, i + request.batch_size)
            c_noise = t.float().expand(x[part].shape[0])
            c = cond.index(part) if cond is not None else None
            out.append(net(x[part], c_noise, c) if c is not None else net(x[part], c_noise))
        x = scheduler.step(torch.cat(out).float(), t, x).prev_sample
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", nargs="?", default=None, help="run (default: the shipped model)")
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20], help="NFE budgets")
    p.add_argument("-n", "--num", type=int, default=64, help="images")
    p.add_argument("--reference-steps", type=int, default=500, help="reference steps")
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i")
    p.add_argument("--out", default="out/bench-samplers", help="folder of the reference")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(args.run, ema=True, device="cpu")
    schedule, prediction = model.denoiser.schedule, model.denoiser.prediction
    if not isinstance(schedule, DiscreteSchedule):
        raise SystemExit("diffusers' schedulers need a discrete (betas) schedule")
    labels = class_ids("all", class_names(model), args.num) if model.num_classes else None
    request = SweepRequest(n=args.num, labels=labels, seed=args.seed)
    out = Path(args.out)
    key = f"{Path(args.run).resolve() if args.run else 'shipped'}|raw=False"
    ref, floor = reference(
        model,
        request,
        "dpmpp-2m",
        args.reference_steps,
        cache=out / "reference.safetensors",
        key=key,
    )
    print(f"reference floor {floor:.2e}; torch threads {torch.get_num_threads()}")
    rows = []
    for nfe in args.nfe:
        for kind, name in PIXDIFF.items():
            for spacing in ("linspace", "trailing"):
                start = time.perf_counter()
                x = draw(model, SweepRequest(**{**request.__dict__, "spacing": spacing}), name, nfe)
                rows.append(("pixdiff", kind, spacing, nfe, x, time.perf_counter() - start))
                start = time.perf_counter()
                sched = diffusers_scheduler(kind, schedule, prediction, spacing)
                x = sample_diffusers(model, request, sched, nfe)
                rows.append(("diffusers", kind, spacing, nfe, x, time.perf_counter() - start))
    results = []
    print(f"{'library':<10}{'method':<10}{'grid':<10}{'NFE':>4}{'RMSE':>11}{'s':>7}")
    for lib, kind, spacing, nfe, x, sec in rows:
        rmse = image_rmse(x, ref).mean().item()
        results.append(
            {"library": lib, "method": kind, "grid": spacing, "nfe": nfe, "rmse": rmse, "s": sec}
        )
        print(f"{lib:<10}{kind:<10}{spacing:<10}{nfe:>4}{rmse:>11.3e}{sec:>7.1f}")
    (out / "vs_diffusers.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'vs_diffusers.json'}")


if __name__ == "__main__":
    main()
