"""Training configuration: nested frozen dataclasses, each option declared once.

``from_dict`` is strict (an unknown key raises with the valid ones), ``--set a.b=value``
overrides one field, and ``FORMULATIONS`` holds the diffusion presets users pick by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, get_type_hints

from pixdiff.config_fields import (  # noqa: F401 (describe: re-exported with the rest)
    check_intervals,
    describe,
    from_dict,
    parse_override,
    to_dict,
    valid_in,
)
from pixdiff.data import ControlConfig, Split
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.nets.prompts import PromptEncoder
from pixdiff.nets.text import build_text_encoder
from pixdiff.prediction import LossSpace
from pixdiff.schedule_registry import schedule_from_dict

Loss = Literal["mse", "l1", "huber"]
Weighting = Literal["none", "min-snr", "soft-min-snr", "sigmoid"]
TimeSampling = Literal["uniform", "log-normal", "logit-normal"]
LRSchedule = Literal["constant", "cosine"]
Precision = Literal["fp32", "bf16", "fp16"]  # fp16: with loss scaling
KNOWN_MODES = ("first", "random", "none")  # data.known_frames: which frames a clip reveals


def interval_of(key: str) -> str | None:
    """The interval of the option ``key`` ('run.seed'), or None if it has none."""
    section, _, name = key.partition(".")
    cls = get_type_hints(TrainConfig).get(section)
    f = next((f for f in fields(cls) if f.name == name), None) if cls else None
    return f.metadata.get("interval") if f else None


@dataclass(frozen=True)
class DataConfig:
    """What to train on: 'fashion-mnist', 'emoji' or an image folder; or clips (docs/video.md):
    'fashion-clips', 'emoji-clips' or a clip folder (a folder with ``frames`` > 0)."""

    name: str = "fashion-mnist"
    image_size: int = 28
    # train | test | all; emoji hold out every 10th emoji as test (pixdiff.data.load_dataset)
    split: Split = "train"
    channels: int | None = None  # None: the dataset's own (1 for Fashion-MNIST, 3 otherwise)
    flip: bool = False  # random horizontal flips
    skip_bad_images: bool = False
    conditional: bool = True  # condition on what the data has: captions (text), else labels
    # clips: frames per clip (0: 16 for the clip sets; a folder is read as clips only with > 0)
    frames: int = valid_in("[0, 64]", 0)
    num_clips: int = valid_in("[1, inf)", 1024)  # how many synthetic clips (fashion/emoji-clips)
    # joint image and video training (Ho et al. 2022a, Sec. 3): this share of a batch's clips
    # trains as separate frames (each attends only to itself; Cond.independent_frames)
    image_share: float = valid_in("[0, 1)", 0.0)
    # clips: which frames the net is given (Ho et al. 2022a, Sec. 3.1; docs/video.md): first
    # (image-to-video), random (a random subset: interpolation, extension), none; several,
    # comma-separated ("first,random,none"), are drawn uniformly per clip
    known_frames: str = "none"

    def __post_init__(self) -> None:
        check_intervals(self, "data")
        modes = self.known_frames.split(",")
        if not modes or any(m not in KNOWN_MODES for m in modes) or len(set(modes)) < len(modes):
            raise ValueError(
                f"data.known_frames={self.known_frames!r}: give one or more of "
                f"{', '.join(KNOWN_MODES)}, comma-separated (e.g. first,random,none)"
            )


@dataclass(frozen=True)
class TextConfig:
    """Text conditioning, used when the data has captions, ``data.conditional`` and ``enabled``.

    The denoiser sees token embeddings (N, L, width) through cross-attention and their masked
    mean (N, width) added to the timestep embedding (Imagen, Saharia et al. 2022, Sec. 2.4).
    """

    enabled: bool = True  # false: ignore captions (e.g. to train on a folder's labels instead)
    # builtin: a byte-level Transformer trained with the denoiser (pixdiff.nets.text); or PATH:
    # a local Hugging Face T5 encoder / CLIP text model, frozen, with a trained projection
    encoder: str = "builtin"
    width: int = 128  # context width the denoiser sees (the builtin encoder's width)
    layers: int = 2  # builtin encoder only
    heads: int = 4  # builtin encoder only
    max_length: int = 80  # tokens including BOS/EOS; longer prompts are truncated (a warning)
    prompt_dropout: float = 0.1  # train on the empty prompt this often, for CFG (Ho & Salimans)

    def __post_init__(self) -> None:
        small = {
            n: getattr(self, n)
            for n, least in (("width", 1), ("layers", 1), ("heads", 1), ("max_length", 3))
            if getattr(self, n) < least
        }
        if small:
            raise ValueError(f"text: {small} too small (max_length counts BOS and EOS, >= 3)")
        if self.width % self.heads:
            raise ValueError(f"text.width {self.width} is not divisible by text.heads {self.heads}")
        if not 0 <= self.prompt_dropout < 1:
            raise ValueError(f"text.prompt_dropout must be in [0, 1), got {self.prompt_dropout}")

    def build_encoder(self) -> PromptEncoder:
        """A fresh text encoder as this section describes (``nets.text.build_text_encoder``)."""
        return build_text_encoder(
            encoder=self.encoder, width=self.width, layers=self.layers, heads=self.heads,
            max_length=self.max_length,
        )  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """The network: a preset name from pixdiff.nets.PRESETS plus field overrides."""

    preset: str = "unet-small"
    overrides: dict = field(default_factory=dict)
    # a video run's start: an image run whose weights fill the spatial layers, its network
    # config fixing theirs (pixdiff.nets.init_from_image; Singer et al. 2022, Sec. 3.2)
    init_from: str = ""


@dataclass(frozen=True)
class DiffusionConfig:
    """The formulation: path, parameterization, loss and noise-level sampling."""

    schedule: dict = field(default_factory=lambda: {"kind": "linear"})
    prediction: str = "eps"
    loss: Loss = "mse"
    loss_space: LossSpace = "prediction"  # x0|eps|v|flow: JiT's loss space (training/loss_space)
    huber_c: float = 0.03  # Huber transition (pseudo-Huber scale, Song & Dhariwal 2023)
    weighting: Weighting = "none"
    min_snr_gamma: float = valid_in("(0, inf)", 5.0)  # min-snr, soft-min-snr (training/weighting)
    sigmoid_bias: float = valid_in("(-inf, inf)", 2.0)  # b of sigmoid(b - lambda), Kingma & Gao
    time_sampling: TimeSampling = "uniform"
    # ln(sigma) (log-normal, EDM) or logit(t) (logit-normal, SD3: 0, 1) ~ N(p_mean, p_std^2)
    p_mean: float = valid_in("(-inf, inf)", -1.2)
    p_std: float = valid_in("(0, inf)", 1.2)
    sigma_data: float = 0.5
    # for classifier-free guidance (Ho & Salimans 2022)
    label_dropout: float = valid_in("[0, 1)", 0.1)
    # learned reverse variance with the hybrid loss L_simple + vlb_weight L_vlb (Nichol &
    # Dhariwal 2021, Eq. 15-16); the network outputs twice the channels
    learn_sigma: bool = False
    vlb_weight: float = 0.001
    # self-conditioning (Chen et al. 2023, Analog Bits): the network also takes its previous x0
    # estimate (twice the input channels); half the batches train on a first estimate
    self_condition: bool = False

    def __post_init__(self) -> None:
        check_intervals(self, "diffusion")
        if self.vlb_weight < 0:
            raise ValueError(f"diffusion.vlb_weight must be >= 0, got {self.vlb_weight}")
        schedule = schedule_from_dict(self.schedule)  # an unknown schedule or bad shift raises
        if not self.learn_sigma:
            return
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError(
                f"diffusion.learn_sigma needs a discrete beta schedule (linear, cosine, ...), "
                f"got {self.schedule.get('kind')!r}; use --formulation ddpm or v-cosine"
            )
        if self.time_sampling != "uniform":
            raise ValueError(
                "diffusion.learn_sigma needs time_sampling 'uniform' (its VLB term T L_t "
                f"assumes uniform timesteps), got {self.time_sampling!r}"
            )


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = valid_in("[1, inf)", 64)
    lr: float = valid_in("(0, 1]", 2e-4)  # beyond 1 Adam diverges (and float32 overflows)
    weight_decay: float = valid_in("[0, inf)", 0.0)
    betas: tuple[float, float] = valid_in("[0, 1)", (0.9, 0.999))
    warmup_steps: int = valid_in("[0, inf)", 200)
    lr_schedule: LRSchedule = "constant"
    grad_clip: float = valid_in("[0, inf)", 1.0)  # 0 disables
    grad_accum: int = valid_in("[1, inf)", 1)
    ema_decay: float = valid_in("[0, 1)", 0.999)
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + n) / (10 + n))

    def __post_init__(self) -> None:
        check_intervals(self, "optim")


@dataclass(frozen=True)
class RunConfig:
    steps: int = valid_in("[1, inf)", 10000)
    seed: int = valid_in("[0, 4294967295]", 0)
    log_every: int = 50
    logger: Literal["csv", "tensorboard"] = "csv"  # + events in RUN/tensorboard (.loggers)
    sample_every: int = 1000  # 0 disables periodic sample grids
    eval_every: int = 0  # metrics of the EMA model every K steps into eval.csv; 0 disables
    eval_n: int = 1000  # samples per periodic evaluation
    eval_metrics: str = "fd,kid,acc"  # any of pixdiff.eval.report.SAMPLE_METRICS
    eval_extractor: str = "fashion-classifier"  # feature extractor name or local path
    checkpoint_every: int = 1000  # 0: only at the end (and on SIGTERM/SIGINT)
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = valid_in("[0, inf)", 0)  # torch CPU threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        check_intervals(self, "run")
        if self.log_every < 1:
            raise ValueError(f"run.log_every must be >= 1, got {self.log_every}")
        negative = [
            n for n in ("sample_every", "eval_every", "checkpoint_every") if getattr(self, n) < 0
        ]
        if negative:
            raise ValueError(f"run: {', '.join(negative)} must be >= 0 (0 disables)")


@dataclass(frozen=True)
class SampleDefaults:
    """How ``pixdiff sample`` draws from this run unless told otherwise."""

    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 2.0


@dataclass(frozen=True)
class SRConfig:
    """Super-resolution: condition on a low-resolution copy of each image (SR3, Saharia et al.
    2021) corrupted by noise conditioning augmentation (CDM, Ho et al. 2022; Imagen, Saharia
    et al. 2022, Sec. 2.4); see :mod:`pixdiff.low_res`.

    Training makes the low-res image by area downsampling, noises it by the forward process of
    ``aug_schedule`` to a time drawn uniformly in [0, aug_max], and gives the network that time.
    """

    low_res_size: int = 0  # side of the low-res input; 0: not a super-resolution model
    aug_max: float = 0.5  # augmentation times are uniform in [0, aug_max]
    # the path of the augmentation noise; vp-cosine: t = 0.2 adds noise of std 0.31
    aug_schedule: dict = field(default_factory=lambda: {"kind": "vp-cosine"})
    # the time ``pixdiff sample --cascade`` and ``pixdiff upscale`` use unless --aug-level
    # (imagen-pytorch's default; Imagen sweeps it at inference)
    aug_level: float = 0.2
    # train on random crop_size x crop_size crops of the images (0: whole images), to sample
    # whole ones: for fully convolutional nets (no attention at the crop's scale)
    crop_size: int = 0

    def __post_init__(self) -> None:
        if self.low_res_size < 0:
            raise ValueError(f"sr.low_res_size must be >= 0 (0 = off), got {self.low_res_size}")
        if self.crop_size < 0:
            raise ValueError(f"sr.crop_size must be >= 0 (0 = whole images), got {self.crop_size}")
        for name in ("aug_max", "aug_level"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"sr.{name} must be a time in [0, 1], got {getattr(self, name)}")
        schedule_from_dict(self.aug_schedule)  # raises for an unknown schedule


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sample: SampleDefaults = field(default_factory=SampleDefaults)
    text: TextConfig = field(default_factory=TextConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    control: ControlConfig = field(default_factory=ControlConfig)  # spatial control (data/)


# Formulation presets: the diffusion section for each family the core supports.
FORMULATIONS: dict[str, DiffusionConfig] = {
    # DDPM, Ho et al. 2020: linear betas, eps-prediction, uniform timesteps
    "ddpm": DiffusionConfig(),
    # v-prediction on the cosine schedule (Salimans & Ho 2022) with min-SNR-5 (Hang et al. 2023)
    "v-cosine": DiffusionConfig(schedule={"kind": "cosine"}, prediction="v", weighting="min-snr"),
    # zero terminal SNR + v-prediction (Lin et al. 2023); sample with the trailing grid
    "v-ztsnr": DiffusionConfig(
        schedule={"kind": "linear", "zero_terminal_snr": True}, prediction="v"
    ),
    # EDM, Karras et al. 2022: preconditioning, log-normal sigma, unit weighting of F
    "edm": DiffusionConfig(schedule={"kind": "edm"}, prediction="edm", time_sampling="log-normal"),
    # rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022), logit-normal t
    # (Esser et al. 2024)
    "flow": DiffusionConfig(
        schedule={"kind": "flow"},
        prediction="flow",
        time_sampling="logit-normal",
        p_mean=0.0,
        p_std=1.0,
    ),
}


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``--set`` overrides; ``model.overrides.X=v`` sets a network field."""
    d = to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node = d
        for i, part in enumerate(path[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(
                    f"unknown config key {'.'.join(path[: i + 1])!r} in --set {text!r}"
                )
            node = node[part]
        if not isinstance(node, dict):
            raise ValueError(
                f"unknown config key {'.'.join(path)!r}: {'.'.join(path[:-1])} is a value, "
                "not a section"
            )
        free = (["model", "overrides"], ["diffusion", "schedule"], ["sr", "aug_schedule"])
        is_free_dict = path[:2] in free
        if not is_free_dict and path[-1] not in node:
            raise ValueError(f"unknown config key {'.'.join(path)!r}; valid here: {sorted(node)}")
        node[path[-1]] = value
    return from_dict(TrainConfig, d)


def load_config(path: str | Path) -> TrainConfig:
    """Read a JSON config file (any subset of the sections)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config file {p} does not exist") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {p} is not valid JSON: {e}") from e
    return from_dict(TrainConfig, d, where=str(p))


def with_formulation(cfg: TrainConfig, name: str) -> TrainConfig:
    if name not in FORMULATIONS:
        raise ValueError(f"unknown formulation {name!r}; valid: {sorted(FORMULATIONS)}")
    return replace(cfg, diffusion=FORMULATIONS[name])
