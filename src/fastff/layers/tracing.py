"""How the layers behave under PyTorch's tracers: torch.fx, TorchScript, jit.trace, compile.

- ``torch.fx.symbolic_trace`` (and timm's ``create_feature_extractor`` / ``get_graph_node_names``,
  which use torch.fx): FFF and MoE record themselves as one ``call_module`` node, as timm does for
  its own untraceable modules (``register_notrace_module``). The traced GraphModule then runs the
  real layer, in either mode, fast paths, ``aux_loss`` and all. FF is traced through.
- ``torch.jit.script``: FF compiles; FFF and MoE refuse in one line (their forwards pick kernels
  in Python), naming ``fastff.export`` (ONNX, ``torch.export``) and ``torch.jit.trace``.
- ``torch.jit.trace``, ``torch.compile``, ``torch.export``: see :func:`is_tracing`; the layers
  then pick implementations without data-dependent shapes or custom ops.
"""

from __future__ import annotations

import torch
from torch import nn

SCRIPT_MESSAGE = (
    "{name} cannot be compiled by torch.jit.script (its forward picks kernels in Python); to "
    "deploy it use fastff.export (ONNX or torch.export: python -m fastff.export, or "
    "fastff.export.export_program / export_onnx), or torch.jit.trace / torch.compile"
)


def is_tracing() -> bool:
    """Whether ``torch.jit.trace``, ``torch.compile`` (dynamo) or ``torch.export`` is tracing
    the current call: the layers then pick trace-friendly implementations (FFF hard path
    ``gather``, the FFF composite soft path under jit.trace, MoE's gathered experts)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def fx_call_module(module: nn.Module, x: torch.fx.Proxy) -> torch.fx.Proxy:
    """Record ``module(x)`` as one ``call_module`` node of the torch.fx graph ``x`` belongs to:
    the layer is a leaf of the trace, however the tracer was configured.

    Raises:
        ValueError: ``module`` is the root being traced (a graph that calls its own root would
            recurse): trace a model that contains the layer.
    """
    tracer = x.tracer
    if getattr(tracer, "root", None) is module:
        raise ValueError(
            f"torch.fx cannot trace a {type(module).__name__} on its own (it is kept as one "
            "call_module node of the model that holds it); trace a model containing the layer"
        )
    return tracer.create_proxy("call_module", tracer.path_of_module(module), (x,), {})


def refuse_script(module: nn.Module) -> None:
    """Raise the one-line ``torch.jit.script`` refusal for ``module`` (a RuntimeError)."""
    raise RuntimeError(SCRIPT_MESSAGE.format(name=type(module).__name__))
