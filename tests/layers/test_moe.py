"""MoE: noisy top-k gating (Shazeer et al. 2017) against the formulas, a dense oracle and
Monte-Carlo estimates."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from oracles import moe_gates_oracle

from fastff.layers import moe as moe_module
from fastff.layers.moe import MoE, _capacity_groups
from fastff.layers.moe_gating import cv_squared, keep_top_k, prob_in_top_k


def dense_oracle(moe: MoE, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Run every expert on every input and combine with the gates: (..., D), (..., E) -> (..., O).

    The masking computation the layer must not use; only valid without dropout.
    """
    x2d = x.reshape(-1, moe.in_features).float()
    hidden = moe.activation(torch.einsum("nd,edw->new", x2d, moe.w1s.float()) + moe.b1s.float())
    outputs = torch.einsum("new,ewo->neo", hidden, moe.w2s.float()) + moe.b2s.float()  # (N, E, O)
    mixed = (gates.reshape(-1, moe.num_experts, 1).float() * outputs).sum(1)
    return mixed.reshape(*x.shape[:-1], moe.out_features)


def run_with_expected_gates(
    moe: MoE, x: torch.Tensor, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward ``x`` and return (output, the gates recomputed from the weights by the oracle).

    A noisy training forward draws its N(0, 1) gate noise first, as one (N, E) tensor: re-seeding
    replays the same draws for the oracle.
    """
    torch.manual_seed(seed)
    y = moe(x)
    noise = None
    if moe.training and moe.noisy_gating:
        torch.manual_seed(seed)
        noise = torch.randn(x[..., 0].numel(), moe.num_experts)
    return y, moe_gates_oracle(moe, x, noise)


def randomize_gate(moe: MoE, scale: float = 1.0, seed: int = 0) -> None:
    """Non-zero random W_g (and W_noise) so routing depends on the input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        moe.w_gate.copy_(scale * torch.randn(moe.w_gate.shape, generator=generator))
        if moe.w_noise is not None:
            moe.w_noise.copy_(scale * torch.randn(moe.w_noise.shape, generator=generator))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------- gates
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("num_experts", "k"), [(5, 1), (5, 2), (5, 3), (4, 4), (1, 1)])
def test_exactly_k_gates_per_input_summing_to_one(training: bool, num_experts: int, k: int):
    moe = MoE(6, 3, num_experts, 4, k=k)
    randomize_gate(moe)
    moe.train(training)
    moe(torch.randn(32, 6))
    gates = moe.gates
    assert gates.shape == (32, num_experts)
    assert torch.equal((gates > 0).sum(-1), torch.full((32,), k))
    torch.testing.assert_close(gates.sum(-1), torch.ones(32))
    # importance is the per-expert sum of the same gates
    torch.testing.assert_close(moe.importance, gates.sum(0))


def test_eval_gates_are_softmax_of_the_clean_top_k():
    moe = MoE(6, 3, 7, 4, k=3).eval()
    randomize_gate(moe)
    x = torch.randn(20, 6)
    moe(x)
    clean = x @ moe.w_gate
    values, indices = clean.topk(3, dim=-1)
    expected = torch.zeros(20, 7).scatter(1, indices, torch.softmax(values, -1))
    torch.testing.assert_close(moe.gates, expected)


@pytest.mark.parametrize("noisy_gating", [True, False])
def test_training_gates_are_softmax_of_the_noisy_top_k(noisy_gating: bool):
    moe = MoE(6, 3, 7, 4, k=3, noisy_gating=noisy_gating).train()
    randomize_gate(moe)
    x = torch.randn(4, 5, 6)
    torch.manual_seed(2)
    moe(x)
    clean = x @ moe.w_gate  # (4, 5, 7)
    if noisy_gating:
        torch.manual_seed(2)
        noise = torch.randn(20, 7).view(4, 5, 7)
        clean = clean + noise * (torch.nn.functional.softplus(x @ moe.w_noise) + 1e-6)
    values, indices = clean.detach().topk(3, dim=-1)
    expected = torch.zeros(4, 5, 7).scatter(-1, indices, torch.softmax(values, -1))
    torch.testing.assert_close(moe.gates, expected)


# ------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    ("num_experts", "k", "batch_shape"),
    [(1, 1, (9,)), (4, 1, (16,)), (4, 2, (5, 7)), (8, 3, (33,)), (6, 6, (4, 3)), (64, 2, (3,))],
)
def test_output_equals_dense_oracle(training, num_experts, k, batch_shape):
    moe = MoE(5, 3, num_experts, 4, k=k, activation="gelu")
    randomize_gate(moe)
    moe.train(training)
    x = torch.randn(*batch_shape, 5)
    y, gates = run_with_expected_gates(moe, x)
    assert y.shape == (*batch_shape, 3)
    torch.testing.assert_close(moe.gates, gates)
    torch.testing.assert_close(y, dense_oracle(moe, x, gates), atol=1e-5, rtol=1e-5)


def test_dispatch_with_imbalanced_load_and_tiny_chunks(monkeypatch: pytest.MonkeyPatch):
    """Most inputs on one expert, a few elsewhere: many capacity classes, one expert per chunk."""
    monkeypatch.setattr(moe_module, "DISPATCH_CHUNK_ELEMENTS", 1)
    moe = MoE(4, 2, 6, 3, k=2, noisy_gating=False).train()
    with torch.no_grad():
        moe.w_gate.zero_()
        moe.w_gate[0, 0] = 5.0  # feature 0 pulls inputs to expert 0
        moe.w_gate[1:, 1:] = torch.randn(3, 5)
    x = torch.randn(200, 4)
    x[:150, 0] = 10.0
    y, gates = run_with_expected_gates(moe, x)
    counts = moe.load
    assert counts[0] >= 150 and (counts > 0).sum() >= 4
    torch.testing.assert_close(y, dense_oracle(moe, x, gates), atol=1e-5, rtol=1e-5)


def test_dispatch_with_balanced_load_and_tiny_chunks(monkeypatch: pytest.MonkeyPatch):
    """Equal counts: one group of all experts, evaluated in place one expert per chunk."""
    monkeypatch.setattr(moe_module, "DISPATCH_CHUNK_ELEMENTS", 1)
    moe = MoE(4, 2, 4, 3, k=1, noisy_gating=False).train()
    with torch.no_grad():
        moe.w_gate.copy_(10 * torch.eye(4))
    x = routed_batch([5, 5, 5, 5]) + 0.1 * torch.randn(20, 4)
    y, gates = run_with_expected_gates(moe, x)
    assert torch.equal(moe.load, torch.full((4,), 5.0))
    torch.testing.assert_close(y, dense_oracle(moe, x, gates), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_dispatch_evaluates_only_the_selected_pairs(
    training: bool, monkeypatch: pytest.MonkeyPatch
):
    """Work is the k * N selected pairs plus < 25 % padding, not every expert for every input."""
    moe = MoE(6, 3, 512, 4, k=2).train(training)
    randomize_gate(moe)
    rows, experts_seen = [], []
    run_group = moe._expert_group

    def counting_group(inputs, experts):
        rows.append(inputs.shape[0] * inputs.shape[1])
        experts_seen.append(inputs.shape[0])
        return run_group(inputs, experts)

    monkeypatch.setattr(moe, "_expert_group", counting_group)
    x = torch.randn(40, 6)
    y, gates = run_with_expected_gates(moe, x)
    torch.testing.assert_close(y, dense_oracle(moe, x, gates), atol=1e-5, rtol=1e-5)
    assert 80 <= sum(rows) <= 1.25 * 80
    assert sum(experts_seen) == int((gates > 0).any(0).sum())


def test_capacity_groups_bound_padding():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        counts = torch.randint(0, 300, (64,), generator=generator)
        counts[:5] = 0
        groups = _capacity_groups((-counts).sort().values.tolist())
        sorted_counts = counts.sort(descending=True).values
        padded = sum((stop - first) * capacity for first, stop, capacity in groups)
        assert groups[0][0] == 0 and groups[-1][1] == int((counts > 0).sum())
        assert all(a[1] == b[0] for a, b in itertools.pairwise(groups))
        assert all(sorted_counts[first] == capacity for first, _, capacity in groups)
        assert padded < 1.25 * counts.sum()
    assert _capacity_groups([0, 0]) == []


def test_leaf_dropout_in_training_only():
    moe = MoE(5, 3, 4, 6, k=2, dropout=1.0)
    randomize_gate(moe)
    x = torch.randn(10, 5)
    y, gates = run_with_expected_gates(moe.train(), x)
    # every hidden activation dropped: each expert outputs its bias only
    torch.testing.assert_close(y, gates @ moe.b2s.detach())
    y, gates = run_with_expected_gates(moe.eval(), x)
    torch.testing.assert_close(y, dense_oracle(moe, x, gates), atol=1e-5, rtol=1e-5)


def test_bfloat16():
    moe = MoE(8, 4, 6, 5, k=2)
    randomize_gate(moe)
    reference = MoE(8, 4, 6, 5, k=2)
    reference.load_state_dict(moe.state_dict())
    moe = moe.to(torch.bfloat16)
    x = torch.randn(3, 11, 8)
    for training in (True, False):
        moe.train(training)
        y, gates = run_with_expected_gates(moe, x.to(torch.bfloat16))
        assert y.dtype == torch.bfloat16 and y.shape == (3, 11, 4)
        # bfloat16 gate logits: same experts, gate values within bfloat16 rounding
        assert torch.equal(moe.gates > 0, gates > 0)
        torch.testing.assert_close(moe.gates, gates, atol=0.02, rtol=0)
        assert torch.isfinite(moe.aux_loss)
        expected = dense_oracle(reference, x, gates)
        torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5)])
def test_empty_batch(training: bool, shape: tuple[int, ...]):
    moe = MoE(5, 3, 4, 2, k=2).train(training)
    y = moe(torch.randn(*shape))
    assert y.shape == (*shape[:-1], 3)
    assert moe.gates.shape == (*shape[:-1], 4)
    assert moe.aux_loss.item() == 0.0


# ----------------------------------------------------------------------------- load and noise
@pytest.mark.parametrize("k", [1, 2])
def test_load_probability_matches_monte_carlo_of_own_noise(k: int):
    """P(x, i) is the chance that expert i is in the top k when its own noise is redrawn."""
    generator = torch.Generator().manual_seed(1)
    batch, num_experts, draws = 4, 5, 20_000
    clean = 0.7 * torch.randn(batch, num_experts, generator=generator)
    noise_std = torch.nn.functional.softplus(torch.randn(batch, num_experts, generator=generator))
    noisy = clean + noise_std * torch.randn(batch, num_experts, generator=generator)
    probability = prob_in_top_k(clean, noise_std, keep_top_k(noisy, k), k)

    estimate = torch.empty(batch, num_experts)
    for i in range(num_experts):
        samples = noisy.expand(draws, batch, num_experts).clone()
        own_noise = torch.randn(draws, batch, generator=generator)
        samples[..., i] = clean[:, i] + noise_std[:, i] * own_noise
        in_top_k = (samples.topk(k, dim=-1).indices == i).any(-1)  # (draws, batch)
        estimate[:, i] = in_top_k.float().mean(0)
    assert 0.05 < probability.mean() < 0.95  # not a degenerate all-0 / all-1 case
    torch.testing.assert_close(probability, estimate, atol=0.02, rtol=0)


@pytest.mark.parametrize("k", [1, 2])
def test_load_matches_monte_carlo_selection_frequency(k: int):
    """Averaged over noise draws, sum_x P(x, i) is the expected number of inputs routed to i."""
    draws = 20_000
    moe = MoE(4, 2, 4, 2, k=k).train()
    randomize_gate(moe, scale=0.5, seed=3)
    x = torch.randn(3, 4)
    moe(x.repeat(draws, 1))  # each row gets its own noise
    selected = (moe.gates > 0).float().sum(0) / draws
    torch.testing.assert_close(moe.load / draws, selected, atol=0.03, rtol=0)


def test_load_probability_is_one_when_every_expert_is_kept():
    clean, noise_std = torch.randn(6, 3), torch.rand(6, 3) + 0.1
    top = keep_top_k(clean + noise_std * torch.randn(6, 3), 3)
    assert torch.equal(prob_in_top_k(clean, noise_std, top, 3), torch.ones(6, 3))
    moe = MoE(5, 2, 3, 2, k=3).train()
    randomize_gate(moe)
    moe(torch.randn(10, 5))
    assert torch.equal(moe.load, torch.full((3,), 10.0))
    assert moe.load_loss.item() == 0.0


def test_noise_only_in_training():
    moe = MoE(6, 3, 8, 4, k=2)
    randomize_gate(moe)
    x = torch.randn(64, 6)
    moe.train()
    moe(x)
    first = moe.gates
    moe(x)
    assert not torch.equal(first, moe.gates)  # fresh noise each training forward
    moe.eval()
    y_eval = moe(x)
    clean_top = (x @ moe.w_gate).topk(2, dim=-1).indices
    assert torch.equal(moe.gates.topk(2, dim=-1).indices.sort(-1).values, clean_top.sort(-1).values)
    assert torch.equal(moe(x), y_eval)


def test_without_noisy_gating_training_is_deterministic_and_has_no_load_loss():
    moe = MoE(6, 3, 8, 4, k=2, noisy_gating=False, w_importance=0.3, w_load=0.5)
    assert moe.w_noise is None
    randomize_gate(moe)
    x = torch.randn(64, 6)
    y_train = moe.train()(x)
    assert moe.load_loss.item() == 0.0
    torch.testing.assert_close(moe.aux_loss, 0.3 * cv_squared(moe.importance))
    assert moe.aux_loss.item() > 0
    assert torch.equal(moe.eval()(x), y_train)
    assert torch.equal(moe.load, (moe.gates > 0).float().sum(0))  # counts when noiseless


# -------------------------------------------------------------------------- balancing losses
def test_cv_squared_is_zero_when_uniform_and_grows_with_imbalance():
    assert cv_squared(torch.full((8,), 3.0)).item() == 0.0
    assert cv_squared(torch.zeros(8)).item() == 0.0
    assert cv_squared(torch.tensor([5.0])).item() == 0.0
    values = [cv_squared(torch.tensor([4.0 + s, 4.0 - s, 4.0, 4.0])).item() for s in range(5)]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] > 0.3
    torch.testing.assert_close(cv_squared(torch.tensor([1.0, 3.0])), torch.tensor(0.25))
    torch.testing.assert_close(cv_squared(torch.tensor([4.0, 0.0, 0.0, 0.0])), torch.tensor(3.0))


def routed_batch(counts: list[int]) -> torch.Tensor:
    """counts[i] one-hot inputs on feature i (routed to expert i by W_g = 10 * I)."""
    return torch.cat([torch.eye(len(counts))[i].expand(c, -1) for i, c in enumerate(counts)])


@pytest.mark.parametrize("noisy_gating", [False, True])
def test_balancing_losses_zero_when_uniform_and_grow_with_imbalance(noisy_gating: bool):
    moe = MoE(4, 2, 4, 3, k=1, noisy_gating=noisy_gating).train()
    with torch.no_grad():
        moe.w_gate.copy_(10 * torch.eye(4))
    losses = []
    for counts in ([8, 8, 8, 8], [11, 7, 7, 7], [20, 4, 4, 4], [29, 1, 1, 1]):
        moe(routed_batch(counts))
        losses.append(moe.aux_loss.item())
        expected = 0.1 * cv_squared(moe.importance)
        if noisy_gating:
            expected = expected + 0.1 * cv_squared(moe.load)
        torch.testing.assert_close(moe.aux_loss.detach(), expected)
    if noisy_gating:  # P(x, own expert) ~ 1, others ~ 0: load nearly the counts
        assert losses[0] < 1e-4
    else:
        assert losses[0] == 0.0
    assert losses == sorted(losses) and losses[-1] > 0.1


def test_loss_weights_are_separate():
    moe = MoE(6, 3, 5, 4, k=2, w_importance=0.25, w_load=2.0).train()
    randomize_gate(moe)
    moe(torch.randn(40, 6))
    torch.testing.assert_close(moe.importance_loss, 0.25 * cv_squared(moe.importance))
    torch.testing.assert_close(moe.load_loss, 2.0 * cv_squared(moe.load))
    torch.testing.assert_close(moe.aux_loss.detach(), moe.importance_loss + moe.load_loss)
    moe.eval()(torch.randn(4, 6))
    assert moe.aux_loss.item() == 0.0 and moe.importance_loss is None


# -------------------------------------------------------------------------------- gradients
def gate_gradients(moe: MoE, with_aux_loss: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    moe.train()
    x = torch.randn(64, moe.in_features)
    loss = moe(x).square().sum()
    if with_aux_loss:
        loss = loss + moe.aux_loss
    loss.backward()
    w_noise_grad = None if moe.w_noise is None else moe.w_noise.grad
    return moe.w_gate.grad, w_noise_grad


@pytest.mark.parametrize("k", [2, 3])
def test_task_loss_trains_the_router_for_k_at_least_2(k: int):
    grad_gate, grad_noise = gate_gradients(MoE(6, 3, 5, 4, k=k, w_importance=0, w_load=0), False)
    assert grad_gate.abs().sum() > 0 and grad_noise.abs().sum() > 0


def test_k1_router_learns_only_from_the_load_loss():
    # task loss alone: the softmax over one kept logit is constant
    grad_gate, grad_noise = gate_gradients(MoE(6, 3, 5, 4, k=1), with_aux_loss=False)
    assert grad_gate is None or torch.all(grad_gate == 0)
    assert grad_noise is None or torch.all(grad_noise == 0)
    # importance of k = 1 gates is a count: no gradient either
    moe = MoE(6, 3, 5, 4, k=1, w_load=0.0)
    grad_gate, _ = gate_gradients(moe, with_aux_loss=True)
    assert grad_gate is None or torch.all(grad_gate == 0)
    # the load loss does reach W_g and W_noise
    grad_gate, grad_noise = gate_gradients(MoE(6, 3, 5, 4, k=1), with_aux_loss=True)
    assert grad_gate.abs().sum() > 0 and grad_noise.abs().sum() > 0


def test_only_selected_experts_receive_gradients():
    moe = MoE(6, 3, 16, 4, k=1, noisy_gating=False).eval()
    randomize_gate(moe)
    x = torch.randn(5, 6)
    moe(x).sum().backward()
    used = moe.load > 0
    assert used.sum() <= 5
    assert torch.all(moe.b2s.grad[used] != 0) and torch.all(moe.b2s.grad[~used] == 0)
    assert torch.all(moe.w1s.grad[~used] == 0)


# ---------------------------------------------------------------------------- sizes and errors
def test_size_properties():
    moe = MoE(10, 3, num_experts=8, expert_width=16, k=2)
    assert moe.training_width == 128 and moe.inference_width == 32
    assert moe.training_size == 136 and moe.inference_size == 40
    assert moe.w1s.shape == (8, 10, 16) and moe.w2s.shape == (8, 16, 3)
    assert moe.b1s.shape == (8, 16) and moe.b2s.shape == (8, 3)
    assert torch.all(moe.w1s.abs() <= 1 / math.sqrt(10))
    assert torch.all(moe.w2s.abs() <= 1 / math.sqrt(16))
    assert torch.all(moe.w_gate == 0) and torch.all(moe.w_noise == 0)
    assert moe.aux_loss.item() == 0.0 and moe.gates is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"in_features": 0}, "in_features"),
        ({"out_features": 0}, "out_features"),
        ({"num_experts": 0}, "num_experts"),
        ({"expert_width": 0}, "expert_width"),
        ({"k": 0}, "k"),
        ({"k": 5}, "k"),
        ({"k": 1.5}, "k"),
        ({"w_importance": -0.1}, "w_importance"),
        ({"w_load": -1}, "w_load"),
        ({"w_load": float("nan")}, "w_load"),
        ({"dropout": 1.5}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"activation": "nope"}, "activation"),
        ({"noisy_gating": "yes"}, "noisy_gating"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str):
    arguments = {"in_features": 4, "out_features": 2, "num_experts": 4, "expert_width": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        MoE(**arguments)


def test_wrong_input_width():
    moe = MoE(4, 2, 3, 2)
    with pytest.raises(ValueError, match="in_features"):
        moe(torch.randn(3, 5))
