"""DDP: the protocol's accuracies are exact (every sample of a split evaluated once over all ranks),
so a run under ``trainer=ddp_cpu`` reports what one process reports for the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from pipeline_utils import run_cli
from torchmetrics.classification import MulticlassAccuracy

from fastff.data.base import EpochShuffle, EvalShard
from fastff.training.checkpoint import load_model, read_checkpoint, run_config
from fastff.training.layer_stats import soft_inference
from fastff.training.results import percent


@pytest.mark.parametrize("n", [7, 10, 180, 1617])
@pytest.mark.parametrize("world_size", [2, 3])
def test_eval_shards_hold_every_index_exactly_once(n, world_size):
    shards = [list(EvalShard(n, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert [len(EvalShard(n, r, world_size)) for r in range(world_size)] == list(map(len, shards))


@pytest.mark.parametrize("n", [7, 10, 1617])
def test_training_shards_follow_the_seeded_epoch_order(n):
    world_size = 2
    for epoch in (0, 3):
        whole = EpochShuffle(n, seed=5)
        whole.set_epoch(epoch)
        order = list(whole)
        shards = []
        for rank in range(world_size):
            sampler = EpochShuffle(n, seed=5, rank=rank, world_size=world_size)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        # Equal lengths (every rank runs the same number of steps); the seeded order, dealt out.
        assert len(shards[0]) == len(shards[1]) == (n + 1) // 2
        padded = order + order[: len(shards[0]) * world_size - n]
        assert shards[0] == padded[0::2] and shards[1] == padded[1::2]
    assert list(EpochShuffle(n, seed=5)) == list(EpochShuffle(n, seed=5))


def _accuracies(model: torch.nn.Module, loader, num_classes: int) -> tuple[float, float]:
    """(hard, soft) accuracy of ``model`` over ``loader`` in this one process."""
    hard = MulticlassAccuracy(num_classes=num_classes, average="micro")
    soft = MulticlassAccuracy(num_classes=num_classes, average="micro")
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            hard.update(model(x), y)
            with soft_inference(model):
                soft.update(model(x), y)
    return hard.compute().item(), soft.compute().item()


@pytest.mark.slow
def test_ddp_cpu_run_reports_the_accuracies_of_one_process(tmp_path):
    """Train 1 epoch with 2 CPU processes (gloo) through the real command line, then evaluate the
    run's checkpoint in this one process: M_A, validation accuracy, G_A and the soft test accuracy
    are identical (digits' training split has 1293 images, an odd number, so a padded
    DistributedSampler would count duplicates)."""
    run_dir = tmp_path / "ddp"
    done = run_cli(
        "fastff.train",
        "trainer=ddp_cpu",
        "data=digits",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("fastff run") == 1  # one summary: rank 0's
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["config"]["trainer"]["devices"] == 2
    assert (run_dir / "train_ddp_process_1.log").exists()  # a second rank really ran
    [epoch] = metrics["history"]
    ckpt_path = Path(metrics["checkpoint"])
    assert ckpt_path.parent == run_dir / "checkpoints"

    config = run_config(read_checkpoint(ckpt_path))
    data = instantiate(config["data"])
    data.setup("test")
    model = load_model(ckpt_path)
    train_acc, _ = _accuracies(model, data.train_eval_dataloader(), data.num_classes)
    val_acc, _ = _accuracies(model, data.val_dataloader(), data.num_classes)
    test_acc, test_soft = _accuracies(model, data.test_dataloader(), data.num_classes)
    assert len(data.train_eval_set) % 2 == 1  # the uneven case

    assert epoch["train_acc"] == train_acc
    assert epoch["val_acc"] == val_acc
    assert metrics["M_A"] == percent(train_acc)
    assert metrics["G_A"] == percent(test_acc)
    assert metrics["test_acc_soft"] == percent(test_soft)

    # fastff.eval, one process, on the same checkpoint.
    evaluated = run_cli(
        "fastff.eval",
        f"ckpt_path={ckpt_path}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["test_acc"] == metrics["G_A"]
    assert report["test_acc_soft"] == metrics["test_acc_soft"]
