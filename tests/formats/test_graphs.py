"""TorchScript and ONNX exports compute what the network does (ONNX through onnxruntime), with
the class labels or prompt tokens as graph inputs, at batch sizes and prompt lengths other than
the traced ones; torch.export traces the label check."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import pixdiff
from pixdiff.cli.main import main
from pixdiff.formats.graphs import GraphNet, example_inputs, export_onnx, graph_inputs
from pixdiff.nets.layers import check_label

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the optional onnx extra")


@pytest.fixture(scope="module", params=["fashion", "emoji"])
def model(request):
    return pixdiff.load(request.param)


def _inputs(model, n: int) -> tuple[torch.Tensor, ...]:
    """n samples; for a text model, prompts of another token length than the traced ones."""
    args = example_inputs(model, n)
    if "input_ids" not in graph_inputs(model):
        return args
    tokens = model.net.text_encoder.tokenize(["a much longer prompt about a cat", "", "b"][:n])
    return (*args[:2], *tokens)


def _native(model, args) -> torch.Tensor:
    with torch.no_grad():
        return GraphNet(model.net, graph_inputs(model)).eval()(*args)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_matches_the_network(model, tmp_path):
    assert main(["export", str(model.path), "--to", "torchscript", str(tmp_path / "m.pt")]) == 0
    extra = {"pixdiff.json": "", "inputs.json": ""}
    graph = torch.jit.load(tmp_path / "m.pt", _extra_files=extra)
    assert json.loads(extra["pixdiff.json"])["net"] == model.config["net"]
    args = _inputs(model, 3)
    with torch.no_grad():
        torch.testing.assert_close(graph(*args), _native(model, args), atol=1e-4, rtol=0)


def test_onnx_in_onnxruntime_matches_the_network(model, tmp_path):
    names = export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [i.name for i in session.get_inputs()] == names
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["pixdiff_config"])["train"]["diffusion"]["prediction"] == "v"
    args = _inputs(model, 3)
    (out,) = session.run(["out"], {n: a.numpy() for n, a in zip(names, args, strict=True)})
    np.testing.assert_allclose(out, _native(model, args).numpy(), atol=1e-4, rtol=0)


def test_torch_export_traces_the_label_check():
    model = pixdiff.load("fashion")
    graph = GraphNet(model.net, graph_inputs(model)).eval()
    args = example_inputs(model, 2)
    exported = torch.export.export(graph, args)
    torch.testing.assert_close(exported.module()(*args), _native(model, args))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 10\].*got min 11, max 11"):
        check_label(torch.tensor([11]), 10)  # eager: the same check and message as before


def test_a_missing_onnx_names_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert main(["export", "fashion", "--to", "onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("needs the onnx package: pip install onnx onnxruntime "
                        "(or pip install 'pixdiff[onnx]')")  # fmt: skip
    assert len(err.splitlines()) == 1 and not (tmp_path / "m.onnx").exists()


def test_an_unknown_format_is_one_line(capsys):
    assert main(["export", "fashion", "--to", "tensorrt", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert "argument --to: invalid choice: 'tensorrt'" in err and len(err.splitlines()) == 1
