"""Hydra entry point and library: export a checkpoint's eval-mode model with every FFF on its hard
path, to ONNX (run it in ONNX Runtime) or to a ``torch.export`` program (``.pt2``).

python -m fastff.export ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt format=onnx \
    output=model.onnx

The exported model takes images as the data module yields them, float32 (B, C, H, W) with a
dynamic batch size B (the input ``images``), and returns class logits (B, num_classes) (the output
``logits``). Neither format needs fastff to run: ONNX Runtime reads the ``.onnx`` file, and
``torch.export.load(path).module()`` the ``.pt2`` file with plain PyTorch.

Every FFF is traced on the ``gather`` strategy (:mod:`fastff.layers.kernels.gather`): one gather
of the reached node per tree level and one gather of the reached leaf's weights, so the exported
graph evaluates one leaf per input (log-time in the layer's width) with no data-dependent shapes.
Every MoE is traced on :meth:`fastff.layers.MoE.gathered_forward` (top-k gates, the k experts'
weights gathered per input).

``quantize=bf16|int8`` exports the model ``fastff.quantize`` makes: every FFF's leaf weights and
every FF's weights become bfloat16 or int8 initializers (int8 with float32 scales), widened in the
graph after the gather (a Cast, and a Mul by the gathered scales), so the file is about 2x or 4x
smaller and ONNX Runtime computes what the quantized torch model computes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fastff.atomic_json import write_json_atomic
from fastff.config_checks import ConfigError
from fastff.data.errors import DatasetError
from fastff.hydra_app import (
    exit_on_user_error,
    hydra_entry,
    instantiate_or_config_error,
    writable_dir_problem,
)
from fastff.models.kinds import kind_of
from fastff.models.sizes import hosted_layers
from fastff.quantization import quantize, quantize_option
from fastff.training.checkpoint import load_model, read_checkpoint, run_config
from fastff.training.results import provenance

FORMATS = ("onnx", "torch_export")
"""What ``format=`` accepts: an ONNX file, or a ``torch.export`` program saved with
``torch.export.save``."""
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "torch_export": ()}
"""Packages each format needs beyond torch."""
CHECK_BATCH_SIZES = (1, 37)
"""Batch sizes the exported file is compared with fastff's hard forward on after writing."""


# ------------------------------------------------------------------------------ trace settings
@contextlib.contextmanager
def export_paths(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every layer of ``model`` runs its exportable path: its kind's
    :attr:`~fastff.models.kinds.LayerKind.export_path` (FFF: eval path ``"hard"`` with the
    ``gather`` strategy; MoE: :meth:`MoE.gathered_forward`; FF and kinds without one: as they
    are). The previous settings are restored on exit. The model must be in eval mode.
    """
    if model.training:
        raise ValueError("export needs the model in eval mode (call model.eval())")
    with contextlib.ExitStack() as paths:
        for _, layer in hosted_layers(model):
            kind = kind_of(layer)
            if kind.export_path is not None:
                paths.enter_context(kind.export_path(layer))
        yield model


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode on its exportable hard path, batch dynamic.

    Args:
        model: the eval-mode model (a backbone such as ``FlatNet`` or the ViT, or one layer).
        example: an input (B, ...) of the shape and dtype to export for; B >= 2 (a batch of 1
            would be specialised by the tracer), any B works in the exported program.
    """
    batch = torch.export.Dim(BATCH_DIM, min=1)
    with torch.no_grad(), export_paths(model):
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def external_data_path(path: str | os.PathLike) -> Path:
    """Where the ONNX exporter puts the weights of a model too large for one ONNX file (the
    format stops at 2 GB): ``<path>.data`` beside ``<path>``."""
    path = Path(path)
    return path.with_name(f"{path.name}.data")


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``model`` (eval mode, exportable hard path) as an ONNX file; returns its path.

    The graph's input is ``images`` (batch, ...) and its output ``logits`` (batch, classes),
    with the batch dimension named ``batch``. Uses the dynamo exporter (needs ``onnxscript``).
    The weights are inside the file, so it runs copied alone; only weights too large for ONNX's
    2 GB limit (over the exporter's 1.5 GB threshold) go to :func:`external_data_path` beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external_data_path(path).unlink(missing_ok=True)  # a stale one of an earlier export
    with (
        torch.no_grad(),
        export_paths(model),
        _quiet_onnx_exporter(),
    ):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            dynamic_shapes=({0: BATCH_DIM},),
            external_data=False,
            verbose=False,
        )
    return path


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """The ONNX exporter prints its progress and its graph passes log every rewrite at INFO:
    keep both off the console (warnings still show)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_model(
    model: nn.Module, example: torch.Tensor, path: str | os.PathLike, format: str
) -> Path:
    """Write ``model`` in ``format`` (``"onnx"`` or ``"torch_export"``) to ``path``."""
    if format == "onnx":
        return export_onnx(model, example, path)
    if format != "torch_export":
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(export_program(model, example), str(path))
    return path


# --------------------------------------------------------------------------- running the files
def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for the file (``threads`` intra-op threads; None: ORT's
    default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def load_exported(
    path: str | os.PathLike, format: str, threads: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running an exported file on a CPU float32 batch: ONNX Runtime for ``onnx``,
    the loaded program for ``torch_export``; (B, ...) -> logits (B, classes)."""
    if format == "onnx":
        session = onnx_session(path, threads)

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            feed = {INPUT_NAME: x.detach().cpu().float().contiguous().numpy()}
            return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0])

        return run_onnx
    program = torch.export.load(str(path)).module()

    def run_program(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return program(x)

    return run_program


def max_abs_difference(
    model: nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    seed: int = 0,
) -> float:
    """Largest |exported - fastff hard forward| over random images in [0, 1) of each batch
    size (the model runs its default hard strategy)."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batch_sizes:
        x = torch.rand(batch, *input_shape, generator=generator)
        with torch.no_grad():
            expected = model(x)
        worst = max(worst, (run(x) - expected).abs().max().item())
    return worst


def exported_test_accuracy(
    run: Callable[[torch.Tensor], torch.Tensor], datamodule: Any, batch_size: int = 256
) -> float:
    """Accuracy in percent of the exported model on the data module's test split."""
    datamodule.setup("test")
    correct = total = 0
    for images, labels in datamodule.test_dataloader():
        for start in range(0, len(images), batch_size):
            logits = run(images[start : start + batch_size])
            correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
            total += len(labels[start : start + batch_size])
    return 100.0 * correct / total


# ------------------------------------------------------------------------------- entry point
class ExportMismatch(Exception):
    """The written file's logits differ from fastff's hard forward beyond the tolerance."""


def output_problem(output: Path, ckpt_path: Path) -> str | None:
    """Why the exported file cannot be written to ``output`` (a folder, the checkpoint itself,
    a folder that cannot be created), or None; checked before any work."""
    if output.is_dir():
        return "is a folder; give the file to write (e.g. output=model.onnx)"
    if output.resolve() == ckpt_path.resolve():
        return "is the checkpoint itself, which the export would overwrite; give another file"
    problem = writable_dir_problem(output.parent)
    if problem:
        return f"cannot write there: {problem}; give a writable path"
    return None


def export_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` in ``cfg.format`` to ``cfg.output``, check the written file
    against fastff's hard forward on random images, optionally score it on the checkpoint's test
    split (``cfg.test``); writes ``export.json`` into the run dir and returns it."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {cfg.format!r}")
    missing = [name for name in NEEDS[cfg.format] if find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"format={cfg.format} needs the packages {missing}: pip install {' '.join(missing)} "
            "(make install installs them)"
        )
    if cfg.format == "torch_export" and cfg.output and not str(cfg.output).endswith(".pt2"):
        raise ConfigError(
            f"output={cfg.output} must end in .pt2 for format=torch_export "
            "(torch.export.load reads only .pt2 files)"
        )
    if cfg.output:
        problem = output_problem(Path(cfg.output), Path(str(cfg.ckpt_path)))
        if problem:
            raise ConfigError(f"output={cfg.output}: {problem}")
    try:  # the recorded config is checked against the allow-list before anything is built
        compact = quantize_option(cfg.get("quantize"))
        ckpt = read_checkpoint(cfg.ckpt_path)
        data_cfg = OmegaConf.create(run_config(ckpt)["data"])
        model = load_model(cfg.ckpt_path)
        if compact is not None:  # compact initializers; checked against the quantized model
            model = quantize(model, compact)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    input_shape = tuple(int(n) for n in ckpt["hyper_parameters"]["config"]["input_shape"])
    del ckpt
    output = Path(cfg.output or Path(cfg.paths.output_dir) / f"model{SUFFIXES[cfg.format]}")
    example = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    export_model(model, example, output, cfg.format)
    files = [output, *(f for f in [external_data_path(output)] if f.is_file())]
    run = load_exported(output, cfg.format)
    difference = max_abs_difference(model, run, input_shape)
    results: dict[str, Any] = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "format": cfg.format,
        "quantize": compact,
        "output": str(output.resolve()),
        "size_mb": round(sum(f.stat().st_size for f in files) / 2**20, 3),
        "files": [str(f.resolve()) for f in files],
        "input": {"name": INPUT_NAME, "shape": [BATCH_DIM, *input_shape], "dtype": "float32"},
        "output_name": OUTPUT_NAME,
        "max_abs_difference": difference,
        "test_acc": None,
        "provenance": provenance(),
    }
    if cfg.test and difference <= cfg.tolerance:
        if cfg.data_dir is not None:
            data_cfg.data_dir = cfg.data_dir
        results["test_acc"] = exported_test_accuracy(run, instantiate_or_config_error(data_cfg))
    write_json_atomic(Path(cfg.paths.output_dir) / "export.json", results)
    if not difference <= cfg.tolerance:  # also NaN
        raise ExportMismatch(
            f"the exported logits differ from fastff's hard forward by {difference:.3g} > "
            f"tolerance={cfg.tolerance} (file kept at {output})"
        )
    print(
        f"exported {cfg.ckpt_path} -> {results['output']} ({cfg.format}, "
        f"{results['size_mb']} MB); max |exported - fastff| = {difference:.3g}"
    )
    if len(files) > 1:
        print(
            f"note: the weights exceed ONNX's 2 GB file limit, so they are in {files[1].name} "
            f"beside {output.name}: copy both files (ONNX Runtime reads the pair)"
        )
    if results["test_acc"] is not None:
        print(f"test accuracy of the exported model: {results['test_acc']:.2f}%")
    return results


@hydra_entry("export")
def main(cfg: DictConfig) -> None:
    """Console script ``fastff-export``."""
    try:
        exit_on_user_error(lambda: export_checkpoint(cfg), (ConfigError, DatasetError))
    except ExportMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
