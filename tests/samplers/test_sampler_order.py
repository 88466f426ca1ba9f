"""Every deterministic sampler's order of convergence against the exact probability-flow ODE:
one table of (sampler, options, order, step counts, paths) driving one test."""

import numpy as np
import pytest
from order_oracle import ode_error

from pixdiff.schedule_registry import get_schedule

# Step counts: a method's error falls at its order once the steps are fine enough; the higher
# orders (and small leading error constants) reach their slope later.
FIRST, SECOND, THIRD = (20, 40, 80), (40, 80, 160), (50, 100, 200)
LOW, HIGH, LATE = (32, 64, 128), (64, 128, 256), (256, 512, 1024)
EDM, VP, BOTH = ("edm",), ("vp-cosine",), ("edm", "vp-cosine")

# UniC lifts UniP-p to order p + 1 (Zhao et al. 2023, Thm. 3.2). PLMS is order 2: its
# Adams-Bashforth weights assume equal steps in the integration variable, but the DDIM transfer
# integrates in sigma/alpha, not in the grid's lambda (an O(h^3) mismatch per step). Warm-up
# steps of lower order (the multistep methods, LMS) sit at high noise, where x0 and eps barely
# move, so they do not show. unipc-bh2 order 2 has a small leading error constant and reaches
# its asymptotic slope only past ~256 steps (on EDM only: slow to run).
ORDERS = [
    # sampler, options, order, step counts, paths
    ("euler", {}, 1, FIRST, EDM),
    ("dpm-solver-1", {}, 1, FIRST, EDM),
    ("dpmpp-2m", {"order": 1}, 1, FIRST, EDM),
    ("lms", {"order": 1}, 1, FIRST, EDM),
    ("heun", {}, 2, SECOND, EDM),
    ("heun", {}, 2, LOW, VP),
    ("dpm-solver-2", {}, 2, SECOND, EDM),
    ("dpm-solver-2", {}, 2, LOW, VP),
    ("dpmpp-2s", {}, 2, SECOND, EDM),
    ("dpmpp-2m", {}, 2, SECOND, EDM),
    ("dpmpp-2m", {}, 2, LOW, VP),
    ("lms", {"order": 2}, 2, SECOND, EDM),
    ("dpm-solver-3", {}, 3, THIRD, EDM),
    ("dpmpp-3m", {}, 3, THIRD, EDM),
    ("dpmpp-3m", {}, 3, HIGH, VP),
    ("lms", {"order": 3}, 3, THIRD, EDM),
    ("lms", {"order": 4}, 4, THIRD, EDM),
    ("unipc-bh1", {"order": 1}, 2, LOW, BOTH),
    ("unipc-bh1", {"order": 2}, 3, HIGH, BOTH),
    ("unipc-bh1", {"order": 3}, 4, HIGH, BOTH),
    ("unipc-bh2", {"order": 1}, 2, LOW, BOTH),
    ("unipc-bh2", {"order": 2}, 3, LATE, EDM),
    ("unipc-bh1", {"order": 3, "corrector": False}, 3, HIGH, BOTH),
    ("deis", {"order": 1}, 1, LOW, BOTH),
    ("deis", {"order": 2}, 2, LOW, BOTH),
    ("deis", {"order": 3}, 3, HIGH, BOTH),
    ("plms", {}, 2, LOW, BOTH),
    ("pndm", {}, 2, LOW, BOTH),  # its three fourth-order warm-up steps do not change PLMS's order
]
CASES = [(path, *row[:4]) for row in ORDERS for path in row[4]]


@pytest.mark.parametrize(
    ("schedule_name", "name", "options", "order", "steps"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{'-'.join(f'{k}{v}' for k, v in c[2].items())}" for c in CASES],
)
def test_error_falls_at_the_methods_order(schedule_name, name, options, order, steps):
    """Log-log slope of the max error at t_end > 0 (log-SNR grid, float64) against the number
    of steps."""
    errs = [ode_error(name, options, get_schedule(schedule_name), n) for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (errs, slope)
