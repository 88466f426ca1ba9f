"""Distillation on the Gaussian-mixture oracle: a trainable student that starts as the exact
teacher (the oracle plus a zero-initialised MLP), tuned by the library's losses.

- progressive distillation: one phase halves the steps (4 -> 2) and the 2-step student lands
  far closer to the ODE endpoint than the teacher's own 2 steps, within a bound of its 4;
- consistency training: the one-step map moves toward the teacher's ODE endpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from pixdiff.denoiser import Denoiser
from pixdiff.samplers import sample_ddim
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import GaussianMixture, OracleNet
from pixdiff.training.consistency import consistency_loss, gap_stage
from pixdiff.training.progressive import phase_grids, progressive_loss

GM = GaussianMixture(
    torch.tensor([[1.5, -0.5], [-1.0, 1.0]], dtype=torch.float64),
    torch.tensor([0.3, 0.4], dtype=torch.float64),
    torch.tensor([0.5, 0.5], dtype=torch.float64),
)
SCHEDULE, PREDICTION = get_schedule("cosine"), "v"


class ResidualStudent(nn.Module):
    """The oracle's output plus a zero-initialised MLP of (x, time): starts as the teacher."""

    def __init__(self, oracle: OracleNet):
        super().__init__()
        self.oracle = oracle
        self.mlp = nn.Sequential(nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU())
        self.out = nn.Linear(128, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_in, c_noise, cond=None):
        features = torch.cat([x_in, c_noise[:, None] / 1000], dim=1)
        return self.oracle(x_in, c_noise).to(x_in.dtype) + self.out(self.mlp(features))


def teacher_and_student() -> tuple[Denoiser, Denoiser]:
    teacher = GM.denoiser(SCHEDULE, PREDICTION)
    net = ResidualStudent(OracleNet(GM, SCHEDULE, PREDICTION, 0.5))
    return teacher, Denoiser(net, SCHEDULE, PREDICTION)


def train(student: Denoiser, loss_of, iters: int, lr: float = 2e-3) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(student.net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    for step in range(iters):
        x0, _ = GM.sample(256, gen)
        loss = loss_of(x0.float(), gen, step)
        opt.zero_grad()
        loss.backward()
        opt.step()


def ddim(denoiser, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    ts = phase_grids(SCHEDULE, 2 * steps)[1]  # the grid the student is trained on
    return sample_ddim(denoiser, x_T, ts).double()


def test_one_progressive_phase_halves_the_steps_with_a_bounded_error(one_thread):
    teacher, student = teacher_and_student()
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(5))
    endpoint = ddim(teacher, x_T.double(), 500)
    error = {n: (ddim(teacher, x_T, n) - endpoint).norm(dim=1).mean().item() for n in (2, 4)}
    assert error[2] > 2 * error[4]  # the teacher's own 2 steps are much worse than its 4

    grids = phase_grids(SCHEDULE, 4)
    train(
        student,
        lambda x0, gen, _: progressive_loss(
            student, teacher, x0, grids, (None, None), weighting="auto", generator=gen
        ),
        iters=400,
        lr=3e-3,
    )
    distilled = (ddim(student, x_T, 2) - endpoint).norm(dim=1).mean().item()
    assert distilled < 0.6 * error[2], (distilled, error)
    assert distilled < 1.5 * error[4], (distilled, error)


def test_consistency_training_moves_the_one_step_map_toward_the_ode_endpoint(one_thread):
    teacher, student = teacher_and_student()
    t = torch.tensor(0.8, dtype=torch.float64)  # sigma~ about 3
    x0, _ = GM.sample(2000, torch.Generator().manual_seed(7))
    x_t = SCHEDULE.alpha(t) * x0 + SCHEDULE.sigma(t) * torch.randn(x0.shape, dtype=x0.dtype)
    ts = torch.cat([torch.linspace(0.8, SCHEDULE.t_min, 512, dtype=torch.float64), t.new_zeros(1)])
    endpoint = sample_ddim(teacher, x_t, ts)

    def one_step_error() -> float:
        with torch.no_grad():
            return (student(x_t.float(), t).x0.double() - endpoint).norm(dim=1).mean().item()

    before = one_step_error()
    iters = 400
    train(
        student,
        lambda x0, gen, step: consistency_loss(
            student,
            x0,
            (None, None),
            teacher=None,
            stage=gap_stage(step, iters, 6),
            p_mean=-1.1,
            p_std=2.0,
            k=8.0,
            b=1.0,
            huber_c=0.0,
            generator=gen,
        ),  # fmt: skip
        iters=iters,
        lr=1e-3,
    )
    after = one_step_error()
    assert after < 0.7 * before, (before, after)
