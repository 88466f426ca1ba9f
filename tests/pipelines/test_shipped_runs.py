"""The shipped models load by name, and each distilled one is what its README says: distilled
from the shipped teacher it names (the same weights), sampled in its few steps with one
network pass per step, and nearer the teacher's 50 steps than the teacher's own few steps."""

import json

import pytest

import pixdiff
from pixdiff.checkpoint import find_weights
from pixdiff.shipped import SHIPPED_CASCADES, SHIPPED_RUNS, shipped_run
from pixdiff.training.distill_config import weights_sha256

KINDS = {
    "fashion": ("class", [1, 28, 28]),
    "fashion-distilled": ("class", [1, 28, 28]),
    "emoji": ("text", [3, 32, 32]),
    "emoji-distilled": ("text", [3, 32, 32]),
    "emoji-sr": ("super-resolution", [3, 64, 64]),
}
# distilled name -> (teacher name, what to draw, guidance)
DISTILLED = {
    "fashion-distilled": ("fashion", {"classes": ["Sneaker", "Trouser", "Bag", "Dress"]}, 2.0),
    "emoji-distilled": ("emoji", {"prompts": ["red apple", "cat face", "sun with face", "ghost"]},
                        3.0),
}  # fmt: skip


def test_every_shipped_name_is_described_here():
    assert set(KINDS) == set(SHIPPED_RUNS)
    configs = {n: json.loads((shipped_run(n) / "config.json").read_text()) for n in SHIPPED_RUNS}
    assert set(DISTILLED) == {n for n, config in configs.items() if "distilled" in config}


@pytest.mark.parametrize("name", sorted(SHIPPED_RUNS))
def test_a_shipped_run_loads_by_name(name):
    model = pixdiff.load(name)
    info = model.info()
    assert model.path == shipped_run(name)
    assert (info["kind"], info["image_shape"]) == KINDS[name]


def test_a_shipped_cascade_loads_by_name():
    for name, stages in SHIPPED_CASCADES.items():
        paths = [m.path for m in pixdiff.load(name).models]
        assert paths == [shipped_run(stage) for stage in stages]


@pytest.mark.parametrize("name", sorted(DISTILLED))
def test_a_distilled_model_names_its_shipped_teacher_and_its_weights(name):
    teacher, _, guidance = DISTILLED[name]
    model = pixdiff.load(name)
    distilled = model.config["distilled"]
    weights, _ = find_weights(shipped_run(teacher), ema=True)
    assert distilled["teacher"] == teacher
    assert distilled["teacher_sha256"] == weights_sha256(weights)
    info = model.info()
    assert (info["sampler"], info["steps"]) == ("ddim", distilled["steps"]) and info["steps"] <= 2
    assert distilled["guidance"] == [guidance, guidance] and info["guidance"] == guidance


@pytest.mark.parametrize("name", sorted(DISTILLED))
def test_a_distilled_model_draws_near_its_teacher_in_one_pass_per_step(name):
    """Same seeds: the student's few steps (one pass each, the scale as an input) land nearer
    the teacher's 50 guided steps, in RMSE, than the teacher's own few guided steps (two
    passes each) do."""
    teacher_name, what, guidance = DISTILLED[name]
    student, teacher = pixdiff.load(name), pixdiff.load(teacher_name)
    steps, n = student.info()["steps"], len(next(iter(what.values())))
    batches = []
    hook = student.net.register_forward_hook(lambda _m, args, _o: batches.append(len(args[0])))
    kwargs = {**what, "guidance": guidance, "seed": 7, "output": "tensor"}
    fast = student.generate(**kwargs)
    hook.remove()
    assert batches == [n] * steps  # no second (unconditional) CFG branch
    reference = teacher.generate(**kwargs, steps=50)
    undistilled = teacher.generate(**kwargs, steps=steps)

    def rmse(x):
        return (x - reference).pow(2).flatten(1).mean(1).sqrt()

    # on average over the samples: one seed may draw another emoji at 50 steps than at 2
    assert rmse(fast).mean() < rmse(undistilled).mean(), (rmse(fast), rmse(undistilled))
