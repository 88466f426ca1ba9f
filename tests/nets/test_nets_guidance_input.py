"""The guidance-scale input of guided-distilled students (Meng et al. 2023): off by default, and
zero-initialised, so a student built from its teacher's weights computes the teacher's output
whatever scale it is given, until it is trained; a net raises for the wrong conditioning."""

import dataclasses

import pytest
import torch

from pixdiff.conditioning import Cond
from pixdiff.nets import build_net, preset


@pytest.mark.parametrize("name", ["unet-tiny", "dit-tiny"])
def test_zero_initialised_guidance_input_leaves_the_teacher_unchanged(perturb, name):
    teacher = perturb(build_net(preset(name, num_classes=3)))
    student_cfg = dataclasses.replace(teacher.config, guidance_embed=True)
    student = build_net(student_cfg).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and missing and all(".guidance." in k for k in missing)
    x, c_noise, label = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 700.0]), torch.tensor([0, 3])
    expected = teacher(x, c_noise, Cond(label=label))
    for w in (0.0, 2.0, 7.5):
        out = student(x, c_noise, Cond(label=label, guidance=torch.full((2,), w)))
        assert torch.equal(out, expected)
    perturb(student)  # a trained guidance input changes the output with the scale
    low = student(x, c_noise, Cond(label=label, guidance=torch.full((2,), 1.0)))
    high = student(x, c_noise, Cond(label=label, guidance=torch.full((2,), 4.0)))
    assert not torch.allclose(low, high)


@pytest.mark.parametrize("name", ["unet-tiny", "dit-tiny"])
def test_guidance_input_is_required_exactly_when_built(name):
    x, c_noise = torch.randn(1, 3, 32, 32), torch.tensor([10.0])
    plain = build_net(preset(name))
    with pytest.raises(ValueError, match=r"conditioning \['guidance'\] it was not built for"):
        plain(x, c_noise, Cond(guidance=torch.ones(1)))
    guided = build_net(preset(name, guidance_embed=True))
    with pytest.raises(ValueError, match=r"lacks \['guidance'\]"):
        guided(x, c_noise)
    with pytest.raises(ValueError, match="cond.guidance must have shape"):
        guided(x, c_noise, Cond(guidance=torch.ones(1, 1)))
    assert guided.config.to_dict()["guidance_embed"] is True
    assert "guidance_embed" in plain.config.to_dict() and not plain.config.guidance_embed
