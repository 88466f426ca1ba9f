"""The ``pixdiff`` command that draws the same images as a server request ("copy as CLI
command" on the page, ``command`` in every response)."""

from __future__ import annotations

import shlex

from pixdiff.shipped import SHIPPED_RUNS, shipped_run

# settings key -> the flag that sets it (value flags; None values are left out)
VALUE_FLAGS = (
    ("class", "--class"), ("prompt", "--prompt"), ("negative_class", "--negative-class"),
    ("negative_prompt", "--negative-prompt"), ("guidance", "--guidance"),
    ("sampler", "--sampler"), ("steps", "--steps"), ("grid", "--grid"), ("eta", "--eta"),
    ("threshold_percentile", "--threshold-percentile"), ("strength", "--strength"),
    ("resample", "--resample"), ("aug_level", "--aug-level"), ("seed", "--seed"), ("n", "-n"),
)  # fmt: skip
CLI_COMMAND = {"sample": "sample", "cascade": "sample", "edit": "edit", "inpaint": "inpaint",
               "upscale": "upscale"}  # fmt: skip


def cli_command(kind: str, source: str, settings: dict) -> str:
    """The command line, shell-quoted; an uploaded image is named input.png (mask.png)."""
    words = ["pixdiff", CLI_COMMAND[kind], *_run_words(kind, source, settings)]
    if kind in ("edit", "inpaint", "upscale"):
        words += ["--input", "input.png"]
    if kind == "inpaint":
        words += ["--mask", "mask.png"]
    values = dict(settings)
    if kind == "cascade":  # each stage's sampler and steps
        stages = values.pop("stages")
        del values["sampler"], values["steps"]
        words += ["--stage-sampler", *(s["sampler"] for s in stages)]
        words += ["--stage-steps", *(str(s["steps"]) for s in stages)]
    words += _flag_words(values)
    return shlex.join(words)


def _run_words(kind: str, source: str, settings: dict) -> list[str]:
    """RUN (or --cascade): nothing for the CLI's own defaults (the shipped Fashion-MNIST model;
    the shipped emoji model for a prompt; the shipped emoji cascade), a shipped run's folder,
    else the run as the server was given it."""
    text = settings.get("prompt") is not None or settings.get("negative_prompt") is not None
    if kind == "cascade":
        return ["--cascade"] if source == "emoji-cascade" else ["--cascade", source]
    if kind == "sample" and (source, text) in (("fashion", False), ("emoji", True)):
        return []
    return [str(shipped_run(source))] if source in SHIPPED_RUNS else [source]


def _flag_words(values: dict) -> list[str]:
    """The flags of the settings that are set, plus the guidance options that are on."""
    words = []
    for key, flag in VALUE_FLAGS:
        if values.get(key) is not None:
            value = values[key]
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if values.get("guidance_interval") is not None:
        words += ["--guidance-interval", *(f"{v:g}" for v in values["guidance_interval"])]
    if values.get("cfg_rescale"):
        words += ["--cfg-rescale", f"{values['cfg_rescale']:g}"]
    if values.get("threshold", "none") != "none":
        words += ["--threshold", values["threshold"]]
    return words
