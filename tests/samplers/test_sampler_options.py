"""A sampler's options given as text (``--sampler-option KEY=VALUE``): converted by the
option's annotation and checked against the sampler's own options."""

import inspect
import math

import pytest

from pixdiff.samplers import SAMPLERS, parse_options


def test_values_are_converted_by_the_options_annotations():
    assert parse_options("heun", {"s_churn": "0.5", "s_tmax": "inf"}) == {
        "s_churn": 0.5,
        "s_tmax": math.inf,
    }
    assert parse_options("ddpm", {"variance": "large"}) == {"variance": "large"}
    assert parse_options("dpm-solver-2", {"order": "3"}) == {"order": 3}  # Literal[1, 2, 3]
    assert parse_options("plms", {"pseudo_rk": "True"}) == {"pseudo_rk": True}
    assert parse_options("unipc-bh1", {"corrector": "false", "order": "3"}) == {
        "corrector": False,
        "order": 3,
    }
    assert parse_options("sde-pc", {"corrector_steps": "2"}) == {"corrector_steps": 2}
    assert parse_options("euler", {}) == {}


def test_every_textual_option_of_every_sampler_round_trips_its_default():
    """Each option's default, written as text, parses back to itself (stats, a dict, is the
    one option that cannot be written as text)."""
    for name, spec in SAMPLERS.items():
        params = inspect.signature(spec.step or spec.loop).parameters
        for option in spec.options():
            if option == "stats":
                continue
            default = spec.defaults.get(option, params[option].default)
            text = str(default).lower() if isinstance(default, bool) else str(default)
            assert parse_options(name, {option: text}) == {option: default}, (name, option)


@pytest.mark.parametrize(
    "sampler, options, message",
    [
        ("heun", {"churn": "1"}, "sampler heun has no option 'churn'; its options: s_churn, "
         "s_tmin, s_tmax, s_noise"),
        ("euler", {"eta": "1"}, "sampler euler has no option 'eta'; its options: none"),
        ("ode-rk45", {"stats": "{}"}, "its options: rtol, atol, max_nfe"),
        ("ddim", {"eta": "x"}, "sampler ddim option eta must be a number, got 'x'"),
        ("ddim", {"eta": "nan"}, "sampler ddim option eta must be a number, got 'nan'"),
        ("ddim", {"eta": "2"}, "DDIM eta must be in [0, 1], got 2.0"),
        ("lms", {"order": "2.5"}, "sampler lms option order must be a whole number, got '2.5'"),
        ("plms", {"pseudo_rk": "yes"}, "sampler plms option pseudo_rk must be true or false"),
        ("dpm-solver-2", {"order": "4"}, "sampler dpm-solver-2 option order must be one of 1, "
         "2, 3, got '4'"),
        ("sde-pc", {"snr": "0"}, "SDE needs snr > 0, got 0.0"),
    ],
)  # fmt: skip
def test_an_unknown_key_lists_the_options_and_a_bad_value_names_its_key(sampler, options, message):
    with pytest.raises(ValueError) as err:
        parse_options(sampler, options)
    assert message in str(err.value) and "\n" not in str(err.value)
