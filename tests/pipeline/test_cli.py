"""The real command line: the default run end to end, W&B offline records, eval, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from pipeline_utils import run_cli

from fastff.layers import FFF
from fastff.models import FlatNet
from fastff.results_schema import RESULT_KEYS
from fastff.tracking.wandb_offline import read_run
from fastff.training.checkpoint import load_layer, load_model

SHORT_DEFAULT = ("trainer.max_epochs=4", "callbacks.rich_progress_bar=null")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default experiment through `python -m fastff.train`, shortened to 4 epochs."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    proc = run_cli(
        "fastff.train",
        *SHORT_DEFAULT,
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={root / 'data'}",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_default_run_writes_metrics(default_run: Path):
    metrics = json.loads((default_run / "metrics.json").read_text())
    for key in RESULT_KEYS:
        assert key in metrics, key
    assert metrics["status"] == "finished"
    assert metrics["dataset"] == "digits" and metrics["layer"] == "fff"
    assert metrics["training_width"] == metrics["leaf_width"] * 2 ** metrics["depth"]
    assert metrics["inference_size"] == metrics["depth"] + metrics["leaf_width"]
    for key in ("M_A", "G_A"):
        assert 10.0 < metrics[key] <= 100.0
    assert 1 <= metrics["ETT_M"] <= 4 and 1 <= metrics["ETT_G"] <= 4
    assert metrics["n_params"] > 0 and metrics["wall_time_s"] > 0
    assert metrics["config"]["layer"]["_target_"] == "fastff.models.layer_builders.fff"
    assert metrics["schema_version"] == 3 and metrics["n_hosted_layers"] == 1
    assert metrics["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0] or metrics[
        "provenance"
    ]["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert (default_run / ".hydra" / "config.yaml").exists()
    assert (default_run / "checkpoints" / "last.ckpt").exists()


def test_default_run_records_wandb_offline(default_run: Path):
    wandb_dir = default_run / "wandb"
    assert wandb_dir.is_dir()
    assert list(wandb_dir.glob("offline-run-*/run-*.wandb"))
    run = read_run(wandb_dir)
    metrics = json.loads((default_run / "metrics.json").read_text())
    assert run.config["layer"]["leaf_width"] == metrics["leaf_width"]
    assert run.config["optimizer"]["lr"] == metrics["config"]["optimizer"]["lr"]
    assert run.summary["G_A"] == pytest.approx(metrics["G_A"])
    assert run.summary["M_A"] == pytest.approx(metrics["M_A"])
    assert any("val/acc" in row for row in run.history)


def test_eval_reproduces_test_accuracy(default_run: Path, tmp_path: Path):
    metrics = json.loads((default_run / "metrics.json").read_text())
    proc = run_cli(
        "fastff.eval",
        f"ckpt_path={metrics['checkpoint']}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["test_acc"] == pytest.approx(metrics["G_A"])


def test_checkpoint_loads_as_plain_modules(default_run: Path):
    model = load_model(default_run / "checkpoints" / "last.ckpt")
    assert isinstance(model, FlatNet) and not model.training
    layer = load_layer(default_run / "checkpoints" / "last.ckpt")
    assert isinstance(layer, FFF)
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)


def test_eval_missing_checkpoint_is_a_clear_error(tmp_path: Path):
    proc = run_cli(
        "fastff.eval", "ckpt_path=nowhere.ckpt", f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "ckpt_path" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=-1", "error: optimizer.lr must be a number in (0, inf)"),
        ("data.normalization=foo", "error: data.normalization must be one of"),
        ("layer.activation=nonsense", "error: layer.activation must be"),
        ("layer.region_leak=1.5", "error: layer.region_leak must be a number in [0, 1]"),
        ("layer=moe layer.k=5", "error: layer.k must be"),
        ("+layer.bogus=1", "error: layer.bogus: unknown setting for layer=fff (allowed: "),
        ("trainer.precision=8", "error: trainer: Precision"),
    ],
)
def test_invalid_value_exits_before_training(tmp_path: Path, override: str, expected: str):
    proc = run_cli("fastff.train", *override.split(), f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_group_option_lists_choices(tmp_path: Path):
    proc = run_cli("fastff.train", "layer=nope", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Available options" in proc.stderr
    for option in ("fff", "ff", "moe"):
        assert option in proc.stderr


def _as_written_before_schema_2(ckpt: dict) -> dict:
    """A checkpoint as fastff wrote it before layer configs were Hydra partials and before the
    protocol was a callback."""
    old = copy.deepcopy(ckpt)
    layer = old["hyper_parameters"]["config"]["run"]["layer"]
    name = layer.pop("_target_").rsplit(".", 1)[1]
    del layer["_partial_"]
    old["hyper_parameters"]["config"]["run"]["layer"] = {"name": name, **layer}
    protocol = old["callbacks"].pop(next(k for k in old["callbacks"] if "PaperProtocol" in k))
    old["protocol"] = protocol
    return old


def test_checkpoints_of_the_previous_layout_still_load(default_run: Path, tmp_path: Path):
    path = default_run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    old_path = tmp_path / "old.ckpt"
    torch.save(_as_written_before_schema_2(ckpt), old_path)
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(load_model(old_path)(x), load_model(path)(x), rtol=0, atol=0)
    proc = run_cli(
        "fastff.eval", f"ckpt_path={old_path}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["layer"] == "fff"


def test_a_file_that_is_no_fastff_checkpoint_is_refused_in_one_line(tmp_path: Path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    proc = run_cli(
        "fastff.eval", f"ckpt_path={tmp_path / 'other.ckpt'}", "hydra.run.dir=.", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a checkpoint written by fastff.train" in proc.stderr


def test_checkpoints_load_without_running_code(default_run: Path, tmp_path: Path):
    """torch.load(weights_only=True): a checkpoint that needs a pickled object is refused."""
    import fractions

    ckpt = torch.load(default_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["payload"] = fractions.Fraction(1, 3)  # any non-allow-listed object
    foreign = tmp_path / "foreign.ckpt"
    torch.save(ckpt, foreign)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((default_run / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    for module, path, expected in [
        ("fastff.eval", foreign, "needs the Python object fractions.Fraction"),
        ("fastff.train", foreign, "needs the Python object fractions.Fraction"),
        ("fastff.eval", truncated, "is not a readable checkpoint"),
        ("fastff.train", truncated, "is not a readable checkpoint"),
        ("fastff.train", tmp_path / "missing.ckpt", "no checkpoint file at"),
    ]:
        run_dir = tmp_path / f"{module}-{path.stem}"
        proc = run_cli(module, f"ckpt_path={path}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert proc.returncode == 2, (module, path, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert line.startswith("error: ckpt_path:") and expected in line, line
