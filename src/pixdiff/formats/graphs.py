"""``pixdiff export RUN --to torchscript FILE`` and ``--to onnx FILE``: a run's network as a
graph that runs without pixdiff (TorchScript in ``torch.jit.load``, ONNX in onnxruntime).

Graph inputs (batch N and token length L dynamic):

    sample          (N, C, H, W) float32   x_t as the network takes it
    timestep        (N,) float32           the network's noise input c_noise: for a discrete
                                           schedule the index t T - 1 (diffusers' timestep),
                                           for a continuous one 1000 t, for EDM ln(sigma) / 4
    class_labels    (N,) int64             a class-conditional net; id num_classes = no class
    input_ids       (N, L) int64           a text-conditioned net: the builtin encoder's byte
    attention_mask  (N, L) bool            tokens (``ByteTokenizer``); "" = no prompt
    low_res, low_res_noise, guidance, ...  the other conditions a net needs, by their
                                           :class:`~pixdiff.conditioning.Cond` names

Output ``out``: the network's prediction (N, C or 2C, H, W). The run's config.json rides along
(its schedule and prediction type say how to sample): the ONNX metadata entry
``pixdiff_config``, the TorchScript extra file ``pixdiff.json``. The data-dependent label check
is skipped while tracing (:func:`pixdiff.nets.layers.check_label`).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from pixdiff.checkpoint import LoadedModel
from pixdiff.conditioning import Cond, merge
from pixdiff.files import atomic_write
from pixdiff.nets.prompts import Tokens
from pixdiff.nets.text import text_encoder_of

TOKEN_INPUTS = ("input_ids", "attention_mask")
GRAPH_NAMES = {"label": "class_labels"}  # Cond field -> graph input, where they differ
FORMATS = ("diffusers", "torchscript", "onnx")


def graph_inputs(model: LoadedModel) -> list[str]:
    """The conditioning inputs of the model's graph, after ``sample`` and ``timestep``."""
    fields = list(model.net.required_cond())
    if getattr(model.net.config, "self_condition", False):
        fields.append("self_cond")
    if text_encoder_of(model.net) is not None:  # prompts enter as tokens, encoded in the graph
        fields = [f for f in fields if f not in ("context", "context_mask", "pooled")]
        fields += TOKEN_INPUTS
    return [GRAPH_NAMES.get(f, f) for f in fields]


class GraphNet(nn.Module):
    """``net(sample, timestep, *inputs)`` with the conditioning as plain tensors, in the order
    of :func:`graph_inputs`, so that it can be traced."""

    def __init__(self, net: nn.Module, inputs: list[str]):
        super().__init__()
        self.net, self.inputs = net, inputs
        self.fields = {v: k for k, v in GRAPH_NAMES.items()}

    def forward(self, sample: Tensor, timestep: Tensor, *inputs: Tensor) -> Tensor:
        given = dict(zip(self.inputs, inputs, strict=True))
        tokens = [given.pop(name) for name in TOKEN_INPUTS if name in given]
        cond = Cond(**{self.fields.get(k, k): v for k, v in given.items()})
        if tokens:
            encoded = text_encoder_of(self.net)(Tokens(tokens[0], tokens[1].bool()))
            cond = merge(cond, encoded)
        return self.net(sample, timestep, cond if cond.present() else None)


def example_inputs(model: LoadedModel, n: int = 2) -> tuple[Tensor, ...]:
    """Fixed inputs for tracing (and parity tests): n samples, class / prompt / low-res
    conditions of the right shapes, the null class and the empty prompt among them."""
    gen = torch.Generator().manual_seed(0)
    device = next(model.net.parameters()).device
    shape = (n, *model.image_shape)
    values = {
        "sample": torch.randn(shape, generator=gen),
        "timestep": torch.linspace(999, 0, n),
        "class_labels": torch.arange(n) % (model.num_classes + 1),
        "self_cond": torch.randn(shape, generator=gen),
        "low_res_noise": torch.linspace(0, 0.3, n),
        "guidance": torch.linspace(1, 4, n),
    }
    if model.sr is not None:
        size = model.sr.low_res_size
        values["low_res"] = torch.randn(n, shape[1], size, size, generator=gen)
    encoder = text_encoder_of(model.net)
    if encoder is not None:
        prompts = ["red apple", "", "a star"] * n
        values["input_ids"], values["attention_mask"] = encoder.tokenize(prompts[:n])
    names = ["sample", "timestep", *graph_inputs(model)]
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"graph export does not support networks that take {missing}")
    return tuple(values[name].to(device) for name in names)


def export_torchscript(model: LoadedModel, path: str | Path) -> list[str]:
    """Write the network as a traced TorchScript file; returns its input names."""
    graph = GraphNet(model.net, graph_inputs(model)).eval()
    buffer = io.BytesIO()
    extra = {"pixdiff.json": json.dumps(model.config), "inputs.json": json.dumps(graph.inputs)}
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings on the shape checks (constant for a shape), TorchScript's deprecation
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, example_inputs(model), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files=extra)
    atomic_write(path, buffer.getvalue())
    return ["sample", "timestep", *graph.inputs]


def export_onnx(model: LoadedModel, path: str | Path, *, opset: int = 17) -> list[str]:
    """Write the network as an ONNX file (needs the onnx package); returns its input names."""
    try:
        import onnx
    except ImportError:
        raise ValueError(
            "--to onnx needs the onnx package: pip install onnx onnxruntime "
            "(or pip install 'pixdiff[onnx]')"
        ) from None
    graph = GraphNet(model.net, graph_inputs(model)).eval()
    args = example_inputs(model)
    names = ["sample", "timestep", *graph.inputs]
    dynamic = {name: {0: "batch"} for name in [*names, "out"]}
    for name in TOKEN_INPUTS:
        if name in dynamic:
            dynamic[name][1] = "tokens"
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and deprecation
        torch.onnx.export(
            graph, args, buffer, input_names=names, output_names=["out"],
            dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pixdiff_config", json.dumps(model.config)
    atomic_write(path, proto.SerializeToString())
    return names
