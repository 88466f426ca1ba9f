"""From a request body to a checked :class:`~pixdiff.serve.tasks.Task`.

Everything a request can get wrong is found here, before the job is queued, as a one-line
ValueError (answered with 422): an unknown sampler or class, a class for a text model, a cap
hit, an image of the wrong size. A model that does not exist or failed to load raises
:class:`~pixdiff.serve.models.ModelUnavailable`; an upload that is not an image of the right
size raises :class:`~pixdiff.serve.uploads.UploadError`.
"""

from __future__ import annotations

from dataclasses import replace

from pixdiff.cli.flags import MAX_SEED
from pixdiff.guidance import GuidanceOptions
from pixdiff.pipelines.edit import edit_grid
from pixdiff.pipelines.model import CascadeModel, Model, Request
from pixdiff.samplers import get_sampler
from pixdiff.sampling import Sampling, default_spacing
from pixdiff.serve.commands import cli_command
from pixdiff.serve.config import Caps
from pixdiff.serve.models import ModelPool
from pixdiff.serve.schemas import (
    EditForm,
    GenerateBody,
    InpaintForm,
    SamplingFields,
    SteeringFields,
    UpscaleForm,
)
from pixdiff.serve.tasks import (
    CascadeTask,
    EditTask,
    GenerateTask,
    InpaintTask,
    Task,
    UpscaleTask,
)
from pixdiff.serve.uploads import Upload, image_input, mask_input


def build_generate(pool: ModelPool, body: GenerateBody, caps: Caps) -> Task:
    """A generation task (a cascade's, for a cascade model)."""
    model, request = pool.get(body.model), request_of(body)
    if isinstance(model, CascadeModel):
        return _cascade_task(pool, model, request, body, caps)
    if model.sr is not None:
        raise ValueError(
            f"{body.model!r} is a super-resolution model: send its input to /v1/upscale"
        )
    sampling = sampling_of(request, model, body.eta)
    labels = request.steering().resolve(model, body.n).labels
    nfe = nfe_of(sampling)
    task = GenerateTask(
        body.model, model, request, [sampling], body.seed, body.n, nfe, labels=labels
    )
    return checked(task, pool, caps, body, [(model, nfe)], kind="sample")


def _cascade_task(
    pool: ModelPool, model: CascadeModel, request: Request, body: GenerateBody, caps: Caps
) -> Task:
    """A cascade's task: each stage's Sampling, the Steering checked against every stage."""
    models = model.models
    samplings = [sampling_of(request, m, body.eta) for m in models]
    steering = request.steering()
    steering.check_consumed(models)
    for m in models:
        steering.for_model(m).resolve(m, body.n)
    nfes = [nfe_of(s) for s in samplings]
    task = CascadeTask(body.model, model, request, samplings, body.seed, body.n, sum(nfes))
    return checked(task, pool, caps, body, list(zip(models, nfes, strict=True)), kind="cascade")


def build_edit(pool: ModelPool, form: EditForm, image: Upload, caps: Caps) -> Task:
    """An SDEdit task on the uploaded image."""
    model, request, sampling, x0 = _edit_inputs(pool, form, image)
    k = len(edit_grid(model.denoiser.schedule, sampling, form.strength)) - 1
    nfe = nfe_of(sampling, k)
    task = EditTask(
        form.model, model, request, [sampling], form.seed, form.n, nfe, image=x0,
        strength=form.strength,
    )  # fmt: skip
    return checked(
        task, pool, caps, form, [(model, nfe)], kind="edit", extra={"strength": form.strength}
    )


def build_inpaint(
    pool: ModelPool, form: InpaintForm, image: Upload, mask: Upload, caps: Caps
) -> Task:
    """An inpainting task: the uploaded image, and the mask (white = fill) of its size."""
    model, request, sampling, x0 = _edit_inputs(pool, form, image)
    known = mask_input(mask, size=model.image_shape[-1], image=str(image))
    one_step_runs = (sampling.steps - 1) * form.resample + 1  # no resampling of the last step
    nfe = nfe_of(sampling, 1) * one_step_runs
    task = InpaintTask(
        form.model, model, request, [sampling], form.seed, form.n, nfe, image=x0, known=known,
        resample=form.resample,
    )  # fmt: skip
    extra = {"resample": form.resample}
    return checked(task, pool, caps, form, [(model, nfe)], kind="inpaint", extra=extra)


def build_upscale(pool: ModelPool, form: UpscaleForm, image: Upload, caps: Caps) -> Task:
    """An upscaling task: the uploaded low-resolution image through a super-resolution run."""
    model, request = pool.get(form.model), request_of(form)
    if not isinstance(model, Model) or model.sr is None:
        raise ValueError(f"{form.model!r} is not a super-resolution model; upscale with one")
    sampling = sampling_of(request, model, form.eta)
    who = f"super-resolution model {form.model!r}"
    size, channels = model.sr.low_res_size, model.net.config.low_res_channels
    low_res = image_input(image, size=size, channels=channels, who=who)
    request.steering().for_model(model).resolve(model, form.n)
    nfe = nfe_of(sampling)
    task = UpscaleTask(
        form.model, model, request, [sampling], form.seed, form.n, nfe, image=low_res,
        aug_level=form.aug_level,
    )  # fmt: skip
    extra = {"aug_level": form.aug_level}
    return checked(task, pool, caps, form, [(model, nfe)], kind="upscale", extra=extra)


def _edit_inputs(pool: ModelPool, form, image: Upload):
    """(model, Request, Sampling, input image) of an edit or inpaint request."""
    model, request = pool.get(form.model), request_of(form)
    if not isinstance(model, Model) or model.sr is not None:
        raise ValueError(f"{form.model!r} cannot edit images: pick a base model (not SR/cascade)")
    sampling = sampling_of(request, model, form.eta)
    c, size = model.image_shape[0], model.image_shape[-1]
    x0 = image_input(image, size=size, channels=c, who=f"model {form.model!r}")
    request.steering().resolve(model, form.n)
    return model, request, sampling, x0


# ----------------------------------------------------------------------------- shared checks


def request_of(body: SamplingFields | SteeringFields) -> Request:
    """The body as the Python API's request object; GuidanceOptions checks its values."""
    if body.seed + body.n - 1 > MAX_SEED:
        raise ValueError(f"seed + n - 1 must be <= {MAX_SEED}, got {body.seed + body.n - 1}")
    if body.threshold_percentile is not None and body.threshold != "dynamic":
        raise ValueError("threshold_percentile needs threshold 'dynamic'")
    given = body.threshold_percentile
    options = GuidanceOptions(
        interval=body.guidance_interval, rescale=body.cfg_rescale, threshold=body.threshold,
        **({} if given is None else {"percentile": given}),
    )  # fmt: skip
    return Request(
        classes=body.class_, prompts=body.prompt, n=body.n, steps=body.steps, nfe=body.nfe,
        sampler=body.sampler, grid=body.grid, guidance=body.guidance,
        negative_class=body.negative_class, negative_prompt=body.negative_prompt,
        options=options,
    )  # fmt: skip


def sampling_of(request: Request, model: Model, eta: float | None) -> Sampling:
    """The request's Sampling for ``model`` (its run's defaults where none is given), checked:
    a known sampler, enough steps, a valid grid and options."""
    sampling = request.sampling(model.config)
    if eta is not None:
        sampling = replace(sampling, options={"eta": eta})
    get_sampler(sampling.sampler).bind(sampling.options)  # an option the sampler lacks raises
    sampling.grid(model.denoiser.schedule)
    return sampling


def nfe_of(sampling: Sampling, steps: int | None = None) -> int:
    """Network evaluations of ``steps`` (default: all) of the sampler's steps."""
    spec = get_sampler(sampling.sampler)
    return spec.total_nfe(sampling.steps if steps is None else steps, sampling.options)


def checked(
    task: Task, pool: ModelPool, caps: Caps, body, stages: list[tuple[Model, int]], *, kind: str,
    extra: dict | None = None,
) -> Task:  # fmt: skip
    """The task once the caps pass, with its settings (exactly what runs, and ``extra``
    values of its kind) and its CLI command; ``stages`` holds each stage's model and NFE."""
    pixels = [(m.image_shape[1] * m.image_shape[2], nfe) for m, nfe in stages]
    caps.check(n=task.n, steps=max(s.steps for s in task.samplings), stages=pixels)
    task.settings = settings_of(task, body, stages[0][0], kind=kind) | (extra or {})
    if len(task.samplings) > 1:
        task.settings["stages"] = [{"sampler": x.sampler, "steps": x.steps} for x in task.samplings]
    task.command = cli_command(kind, pool.entries[task.name].source, task.settings)
    return task


def settings_of(task: Task, body, first: Model, *, kind: str) -> dict:
    """What the response reports as the settings used: every value, defaults filled in."""
    s = task.samplings[0]
    scale = body.guidance  # a cascade's stages each default to their own run's scale
    if kind != "cascade":
        scale = task.request.steering().resolve(first, 1).scale
    return {
        "model": task.name, "task": kind, "class": body.class_, "prompt": body.prompt,
        "negative_class": body.negative_class, "negative_prompt": body.negative_prompt,
        "sampler": s.sampler, "steps": s.steps, "nfe": task.calls,
        "grid": s.spacing or default_spacing(first.denoiser.schedule), "eta": body.eta,
        "guidance": scale, "guidance_interval": body.guidance_interval,
        "cfg_rescale": body.cfg_rescale, "threshold": body.threshold,
        "threshold_percentile": body.threshold_percentile,
        "seed": task.seed, "n": task.n, "seeds": [task.seed, task.seed + task.n - 1],
    }  # fmt: skip
