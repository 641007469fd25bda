"""CUDA checks (skipped without a GPU): layer dtypes against float64 CPU results, GPU training."""

from __future__ import annotations

import pytest
import torch

from fastff.layers import FF, FFF, MoE

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_fff_on_cuda_matches_cpu_float64(dtype):
    torch.manual_seed(0)
    layer = FFF(32, 6, leaf_width=8, depth=4, hardening=1.0)
    x = torch.randn(3, 40, 32)
    expected_soft = layer.double().train().soft_forward(x.double())
    layer.eval()
    gpu = FFF(32, 6, leaf_width=8, depth=4, hardening=1.0)
    gpu.load_state_dict(layer.float().state_dict())
    gpu = gpu.to("cuda", dtype)
    soft = gpu.soft_forward(x.to("cuda", dtype)).double().cpu()
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(soft, expected_soft, atol=tol * 10, rtol=tol * 10)
    # Hard routing may differ from float64 only where a node logit is within rounding of 0.
    leaves = gpu.leaf_indices(x.to("cuda", dtype)).cpu()
    agree = (leaves == layer.double().leaf_indices(x.double())).float().mean()
    assert agree > 0.95
    assert gpu.eval()(x.to("cuda", dtype)).shape == (3, 40, 6)


@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_fused_soft_step_on_cuda_equals_composite_autograd(leak):
    torch.manual_seed(1)
    layer = FFF(32, 6, leaf_width=4, depth=5, hardening=2.0, region_leak=leak)
    layer = layer.to("cuda", torch.float64).train()
    x = torch.randn(3, 40, 32, device="cuda", dtype=torch.float64)
    results = []
    for implementation in ("fused", "composite"):
        layer.soft_implementation = implementation
        layer.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_(True)
        torch.manual_seed(7)  # the same region-leak draws on both paths
        y = layer(inputs)
        (y.square().sum() + layer.aux_loss).backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        results.append((y.detach(), inputs.grad, *grads))
    for fused, composite in zip(*results, strict=True):
        torch.testing.assert_close(fused, composite, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_cls", [FF, MoE])
def test_baselines_run_on_cuda_in_bfloat16(layer_cls):
    args = (32, 6, 64) if layer_cls is FF else (32, 6, 8, 16)
    layer = layer_cls(*args).to("cuda", torch.bfloat16)
    x = torch.randn(50, 32, device="cuda", dtype=torch.bfloat16)
    y = layer.train()(x)
    (y.float().sum() + layer.aux_loss.float()).backward()
    assert torch.isfinite(y.float()).all()
    assert layer.eval()(x).shape == (50, 6)


def test_training_on_gpu_with_bf16_mixed(tmp_path):
    from pipeline_utils import compose_config

    from fastff.train import train

    cfg = compose_config(
        "train",
        [
            "trainer=gpu",
            "trainer.fast_dev_run=true",
            "logger=none",
            "callbacks.rich_progress_bar=null",
        ],
        tmp_path / "run",
    )
    assert train(cfg)["status"] == "smoke_test"  # fast_dev_run is a pipeline check
