"""The sampler sweep's plot: every line looks different (a colour per sampler, a linestyle per
grid), however many samplers and grids are swept."""

from collections import Counter

import matplotlib
import pytest

from pixdiff.eval.sampler_sweep import DEFAULT_SAMPLERS, SweepRow, plot
from pixdiff.timesteps import SPACINGS

matplotlib.use("Agg")


def sweep_rows(samplers, grids, nfes=(5, 10)) -> list[SweepRow]:
    return [
        SweepRow(s, nfe, nfe, nfe, 1.0 / (nfe + i), 0.1, grid)
        for grid in grids
        for i, s in enumerate(samplers)
        for nfe in nfes
    ]


def plotted_lines(rows, tmp_path, monkeypatch) -> dict[str, tuple]:
    """{legend label: (colour, dash pattern)} of the lines plot() draws (the pattern, since
    get_linestyle() names every custom dash sequence "--")."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read back
    plot(rows, tmp_path / "sweep.png", floor=1e-3)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    (ax,) = figures[0].axes
    lines = [line for line in ax.get_lines() if line.get_label() != "floor"]
    return {
        line.get_label(): (line.get_color(), str(line._unscaled_dash_pattern)) for line in lines
    }


@pytest.mark.parametrize(
    "samplers, grids",
    [
        (DEFAULT_SAMPLERS, ["trailing"]),
        # the README's `--grid trailing,log-snr,karras,tuned`: 56 lines, once 4 of them alike
        (DEFAULT_SAMPLERS, ["trailing", "log-snr", "karras", "tuned"]),
        (DEFAULT_SAMPLERS, [*SPACINGS, "tuned"]),
        ([f"s{i}" for i in range(25)], ["trailing", "tuned"]),  # more samplers than tab20
    ],
)
def test_no_two_lines_share_colour_and_linestyle(samplers, grids, tmp_path, monkeypatch):
    lines = plotted_lines(sweep_rows(samplers, grids), tmp_path, monkeypatch)
    assert len(lines) == len(samplers) * len(grids)
    assert max(Counter(lines.values()).values()) == 1
    several = len(grids) > 1
    for s in samplers:  # each sampler keeps its own colour across grids
        colours = {lines[f"{s} ({g})" if several else s][0] for g in grids}
        assert len(colours) == 1
    for g in grids:  # each grid keeps its linestyle across samplers
        styles = {lines[f"{s} ({g})" if several else s][1] for s in samplers}
        assert len(styles) == 1
    # and no two samplers share a colour
    assert len({lines[f"{s} ({grids[0]})" if several else s][0] for s in samplers}) == len(samplers)
