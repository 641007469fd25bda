"""Training through the real configs: fast_dev_run per layer, determinism, results, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fastff.results_schema import RESULT_KEYS
from fastff.train import train
from fastff.training.module import ClassifierModule

QUICK = ("logger=none", "callbacks.rich_progress_bar=null", "trainer=cpu")


@pytest.mark.parametrize("layer", ["fff", "ff", "moe"])
def test_fast_dev_run_trains_every_layer(make_cfg, layer):
    cfg = make_cfg(f"layer={layer}", "trainer.fast_dev_run=true", *QUICK)
    results = train(cfg)
    assert results["status"] == "smoke_test"  # a pipeline check, never a result
    assert results["layer"] == layer
    assert 0.0 <= results["M_A"] <= 100.0
    assert 0.0 <= results["G_A"] <= 100.0
    assert results["ETT_M"] == 1 and results["ETT_G"] == 1
    written = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert written["G_A"] == results["G_A"]
    for key in RESULT_KEYS:
        assert key in written


def test_keys_that_do_not_apply_are_null(make_cfg):
    ff = train(make_cfg("layer=ff", "trainer.fast_dev_run=true", *QUICK))
    assert ff["leaf_width"] is None and ff["depth"] is None
    assert ff["inference_width"] == ff["training_width"] == 64
    moe = train(make_cfg("layer=moe", "trainer.fast_dev_run=true", *QUICK))
    assert moe["num_experts"] == 4 and moe["k"] == 2 and moe["expert_width"] == 16
    assert moe["inference_width"] == 2 * 16
    assert moe["leaf_width"] is None and moe["depth"] is None


def test_layer_configs_derive_depth(make_cfg):
    results = train(
        make_cfg("layer.width=32", "layer.leaf_width=2", "trainer.fast_dev_run=true", *QUICK)
    )
    assert results["depth"] == 4 and results["inference_size"] == 4 + 2
    by_depth = train(
        make_cfg(
            "layer.width=null",
            "layer.depth=2",
            "layer.leaf_width=4",
            "trainer.fast_dev_run=true",
            *QUICK,
        )
    )
    assert by_depth["width"] == 16


def _short(make_cfg, *extra):
    return make_cfg("trainer.max_epochs=3", "+trainer.limit_train_batches=5", *QUICK, *extra)


def test_same_seed_gives_same_metrics(make_cfg):
    first = train(_short(make_cfg, "seed=7"))
    second = train(_short(make_cfg, "seed=7"))
    for key in ("M_A", "G_A", "ETT_M", "ETT_G", "history", "test_acc_soft"):
        assert first[key] == second[key], key
    assert first["epochs"] == 3


def test_protocol_scores_best_validation_checkpoint(make_cfg):
    results = train(_short(make_cfg))
    history = results["history"]
    best_val_epoch = max(range(len(history)), key=lambda i: (history[i]["val_acc"], -i)) + 1
    assert results["ETT_G"] == best_val_epoch
    assert results["M_A"] == pytest.approx(100 * max(h["train_acc"] for h in history), abs=1e-3)
    assert f"best-epoch{best_val_epoch - 1:03d}" in results["checkpoint"]


def test_results_cover_the_whole_run_not_the_tested_checkpoint(make_cfg):
    """Testing the best-validation checkpoint must not roll the protocol back to its epoch."""
    # A high learning rate keeps the validation accuracy from peaking in the last epoch.
    cfg = make_cfg("trainer.max_epochs=8", "optimizer.lr=0.05", "seed=3", *QUICK)
    cfg.callbacks.early_stopping = None
    results = train(cfg)
    history = results["history"]
    assert results["ETT_G"] < 8, "setup: the best validation epoch must precede the last"
    assert results["epochs"] == len(history) == 8
    assert [row["epoch"] for row in history] == list(range(1, 9))
    assert results["M_A"] == pytest.approx(100 * max(row["train_acc"] for row in history))
    best_train_epoch = max(range(8), key=lambda i: (history[i]["train_acc"], -i)) + 1
    assert results["ETT_M"] == best_train_epoch
    written = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert written["epochs"] == 8 and written["history"] == history
    assert written["schema_version"] == 3


def test_resumed_fit_continues_the_protocol(make_cfg):
    first = _short(make_cfg, "trainer.max_epochs=2")
    first.callbacks.early_stopping = None
    before = train(first)
    last = Path(first.paths.output_dir, "checkpoints", "last.ckpt")
    resumed = _short(make_cfg, "trainer.max_epochs=4", f"ckpt_path={last}")
    resumed.callbacks.early_stopping = None
    after = train(resumed)
    assert after["epochs"] == 4
    assert after["history"][:2] == before["history"]
    assert after["M_A"] == pytest.approx(100 * max(row["train_acc"] for row in after["history"]))


def test_failed_run_still_writes_metrics(make_cfg, monkeypatch):
    def explode(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(ClassifierModule, "training_step", explode)
    cfg = _short(make_cfg)
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    written = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert written["status"] == "failed"
    assert "boom" in written["error"]
    assert written["config"]["layer"]["_target_"].endswith("layer_builders.fff")


def test_csv_logger_writes_history(make_cfg):
    cfg = make_cfg("trainer.max_epochs=2", "callbacks.rich_progress_bar=null", "logger=csv")
    train(cfg)
    text = Path(cfg.paths.output_dir, "csv", "metrics.csv").read_text()
    assert "val/acc" in text and "train_eval/acc" in text


def test_interrupted_run_keeps_finished_epochs(make_cfg, monkeypatch):
    def interrupt_after_second_epoch(self):
        if self.current_epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ClassifierModule, "on_train_epoch_end", interrupt_after_second_epoch)
    cfg = _short(make_cfg, "trainer.max_epochs=5")
    with pytest.raises(SystemExit):
        train(cfg)
    written = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert written["status"] == "interrupted"
    assert written["epochs"] == 2 and written["M_A"] is not None


def test_plateau_scheduler_halves_learning_rate(make_cfg):
    cfg = _short(
        make_cfg,
        "logger=csv",
        "scheduler=plateau",
        "scheduler.scheduler.patience=0",
        "scheduler.monitor=train_eval/acc",
        "optimizer.lr=1e-12",
        "trainer.max_epochs=4",
    )
    cfg.callbacks.early_stopping = None
    assert train(cfg)["status"] == "finished"
    with Path(cfg.paths.output_dir, "csv", "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    lrs = [float(row["lr-Adam"]) for row in rows if row.get("lr-Adam")]
    assert lrs[0] == pytest.approx(1e-12)
    assert lrs[-1] == pytest.approx(1e-12 * 0.5 ** (len(lrs) - 1))
    assert len(lrs) == 4
