"""``trainer=gpu`` / ``trainer=ddp`` on a machine without a GPU: one line that says what to use
instead (``trainer=cpu``, or ``trainer=ddp_cpu`` for DDP)."""

from __future__ import annotations

import pytest
import torch

from fastff.config_checks import ConfigError, check_accelerator


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("choice", "overrides", "expected"),
    [
        ("gpu", [], "trainer=gpu needs a CUDA GPU, and this machine has none"),
        ("ddp", [], "trainer=ddp needs a CUDA GPU"),
        ("default", ["trainer.accelerator=gpu"], "trainer.accelerator=gpu needs a CUDA GPU"),
        ("cpu", ["trainer.accelerator=cuda"], "trainer.accelerator=cuda needs a CUDA GPU"),
    ],
)
def test_gpu_trainers_without_a_gpu_say_what_to_use(make_cfg, no_gpu, choice, overrides, expected):
    cfg = make_cfg(f"trainer={choice}", *overrides)
    with pytest.raises(ConfigError) as caught:
        check_accelerator(cfg.trainer, choice)
    message = str(caught.value)
    assert expected in message
    suggestion = "use trainer=ddp_cpu (DDP with CPU processes) or trainer=cpu"
    assert message.endswith(suggestion if choice == "ddp" else "use trainer=cpu")


@pytest.mark.parametrize("choice", ["default", "cpu", "ddp_cpu"])
def test_cpu_trainers_pass_without_a_gpu(make_cfg, no_gpu, choice):
    check_accelerator(make_cfg(f"trainer={choice}").trainer, choice)


def test_gpu_trainer_passes_where_cuda_is_available(make_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_accelerator(make_cfg("trainer=ddp").trainer, "ddp")
