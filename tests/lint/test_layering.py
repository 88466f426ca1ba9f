"""The import layering of src/pixdiff (tests/lint/layering.py, also run by ``make lint``), and the
checker itself on a small made-up package."""

from pathlib import Path

from layering import check


def test_pixdiff_imports_go_down_the_layers_without_cycles_and_files_stay_short():
    problems = check()
    assert not problems, "\n".join(problems)


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_finds_each_kind_of_problem(tmp_path):
    root = tmp_path / "pixdiff"
    write(root, "__init__.py", "from pixdiff.schedules import q\n")
    write(root, "schedules.py", "def q():\n    from pixdiff.config import C\n")
    write(root, "config.py", "C = 1\n")
    write(root, "data/__init__.py", "")
    write(root, "data/a.py", "from pixdiff.data.b import f\n")
    write(root, "data/b.py", "def f():\n    from . import a\n")
    write(root, "nets/__init__.py", "")
    write(root, "nets/long.py", "x = 1\n" * 401)
    write(root, "stray.py", "")
    problems = check(root)
    assert len(problems) == 4, problems
    stray, upward, cycle, long = problems
    assert "pixdiff.stray is in no layer" in stray
    assert "schedules.py:2: pixdiff.schedules (core) imports pixdiff.config (store)" in upward
    assert "import cycle pixdiff.data.a -> pixdiff.data.b -> pixdiff.data.a" in cycle
    assert "data/a.py:1" in cycle and "data/b.py:2" in cycle
    assert "nets/long.py: 401 lines, over 400" in long


def test_imports_of_lower_layers_and_within_a_layer_pass(tmp_path):
    root = tmp_path / "pixdiff"
    write(root, "__init__.py", "import pixdiff.cli.main\n")
    write(root, "cli/__init__.py", "")
    write(root, "cli/main.py", "from pixdiff.cli import run\nfrom pixdiff.nets import unet\n")
    write(root, "cli/run.py", "from ..training import trainer\n")
    write(root, "training/__init__.py", "")
    write(root, "training/trainer.py", "from pixdiff.data import load\nfrom pixdiff import files\n")
    write(root, "data/__init__.py", "from .load import load\n")
    write(root, "data/load.py", "import pixdiff.files\n")
    write(root, "files.py", "")
    write(root, "nets/__init__.py", "")
    write(root, "nets/unet.py", "")
    assert check(root) == []
