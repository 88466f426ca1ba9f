"""Generating commands never mix or lose images: a fresh directory per invocation, an exact
--out only when empty, --overwrite-out removing only what an earlier pixdiff command listed."""

import json

import pytest

from pixdiff.cli import output
from pixdiff.cli.main import main

FAST = ["-n", "2", "--steps", "1", "--class", "Bag", "--no-progress"]


def sample(*argv: str) -> int:
    return main(["sample", *FAST, *argv])


def test_without_out_every_invocation_gets_a_new_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(output.time, "strftime", lambda _: "20261202-120000")  # same second
    assert sample() == 0 and sample() == 0
    made = sorted((tmp_path / "out" / "sample").iterdir())
    assert [p.name for p in made] == ["20261202-120000-ddim-s0", "20261202-120000-ddim-s0-2"]
    for folder in made:
        assert sorted(p.name for p in folder.iterdir()) == [
            "000000.png", "000001.png", "grid.png", "settings.json",
        ]  # fmt: skip


def test_settings_record_how_to_reproduce_and_the_files(tmp_path):
    assert sample("--out", str(tmp_path / "o"), "--seed", "7") == 0
    record = json.loads((tmp_path / "o" / "settings.json").read_text())
    assert record["complete"] and record["command"] == "sample"
    assert record["sampler"] == "ddim" and record["steps"] == 1 and record["seeds"] == [7, 8]
    assert record["guidance"] == 2.0 and record["run"].endswith("fashion_unet")
    assert record["flags"]["class_"] == "Bag" and record["pixdiff"]
    assert sorted(record["files"]) == ["000000.png", "000001.png", "grid.png"]


def test_a_used_out_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "o"
    assert sample("--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sample("--out", str(out), "--seed", "3") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not empty" in err and "--overwrite-out" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_out_replaces_only_what_pixdiff_wrote(tmp_path):
    out = tmp_path / "o"
    assert main(["sample", *FAST[:1], "4", *FAST[2:], "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert sample("--out", str(out), "--overwrite-out") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.png", "000001.png", "grid.png", "notes.txt", "settings.json"]
    assert (out / "notes.txt").read_text() == "mine"  # the 4-image run's 000002/3 are gone


def test_overwrite_out_refuses_a_folder_pixdiff_did_not_write(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "000000.png").write_bytes(b"a user's own file")
    assert sample("--out", str(out), "--overwrite-out") == 2
    assert "did not write it" in capsys.readouterr().err
    assert (out / "000000.png").read_bytes() == b"a user's own file"


def test_overwrite_out_never_replaces_an_unlisted_file(tmp_path, capsys):
    out = tmp_path / "o"
    assert sample("--out", str(out)) == 0
    record = json.loads((out / "settings.json").read_text())
    record["files"] = ["grid.png"]  # 000000.png and 000001.png now look like someone else's
    (out / "settings.json").write_text(json.dumps(record))
    kept = (out / "000000.png").read_bytes()
    assert sample("--out", str(out), "--overwrite-out") == 2
    assert "pixdiff did not write" in capsys.readouterr().err
    assert (out / "000000.png").read_bytes() == kept


@pytest.mark.parametrize("content", ["{not json", '{"files": [3]}', '{"complete": true}'])
def test_a_damaged_manifest_removes_nothing(tmp_path, capsys, content):
    out = tmp_path / "o"
    assert sample("--out", str(out)) == 0
    (out / "settings.json").write_text(content)
    assert sample("--out", str(out), "--overwrite-out") == 2
    assert "damaged" in capsys.readouterr().err
    assert (out / "000001.png").exists()


def test_a_manifest_cannot_reach_outside_its_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "o"
    assert sample("--out", str(out)) == 0
    record = json.loads((out / "settings.json").read_text())
    record["files"] += ["../victim.txt", str(victim)]
    (out / "settings.json").write_text(json.dumps(record))
    assert sample("--out", str(out), "--overwrite-out") == 0
    assert victim.read_text() == "keep"
