"""`pixdiff sample --parallel picard` on the shipped Fashion-MNIST model, and its one-line
bad-input errors."""

import pytest

from pixdiff.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def sample(out, *flags: str) -> int:
    return main(["sample", "-n", "2", "--steps", "20", "--out", str(out), "--no-progress", *flags])


def test_parallel_sampling_writes_images_and_reports_rounds(tmp_path, capsys):
    assert (
        sample(tmp_path / "p", "--parallel", "picard", "--window", "8", "--tolerance", "1e-2") == 0
    )
    assert sorted(p.name for p in (tmp_path / "p").glob("0*.png")) == ["000000.png", "000001.png"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    words = line.split()  # NFE N in R sequential rounds (sequential: S)
    assert words[0] == "NFE" and line.endswith("(sequential: 20)"), line
    nfe, rounds = int(words[1]), int(words[3])
    assert rounds < 20 <= nfe, line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--parallel", "picard", "--tolerance", "0"], "tolerance must be a number > 0"),
        (["--parallel", "picard", "--tolerance", "-0.1"], "tolerance must be a number > 0"),
        (["--parallel", "picard", "--window", "0"], "window must be a whole number >= 1"),
        (["--parallel", "picard", "--sampler", "dpmpp-2m"], "one-step form (ddpm, "),
        (["--parallel", "picard", "--sampler", "heun"], "; heun is multistep"),
        (["--tolerance", "0.01"], "--window and --tolerance need --parallel picard"),
        (["--parallel", "picard", "--trajectory"], "does not go with --parallel"),
    ],
)
def test_bad_parallel_input_is_one_line(tmp_path, capsys, flags, message):
    assert sample(tmp_path / "bad", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad" / "grid.png").exists()
