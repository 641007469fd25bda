"""FFF behaviour against the spec and slow per-sample oracles (no reference package needed)."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle, fff_leaf_output, fff_soft_oracle

from fastff.layers import FFF

DEPTHS = [0, 1, 2, 3, 5]
LEAF_WIDTHS = [1, 4, 32]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def make_fff(depth: int = 3, leaf_width: int = 4, seed: int = 0, **kwargs) -> FFF:
    torch.manual_seed(seed)
    return FFF(6, 3, leaf_width, depth, **kwargs)


def saturate(fff: FFF, scale: float = 1e4) -> None:
    """Scale node parameters so every node probability is exactly 0 or 1 in float32."""
    with torch.no_grad():
        fff.node_weights.mul_(scale)
        fff.node_biases.mul_(scale)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("leaf_width", LEAF_WIDTHS)
def test_hard_forward_equals_tree_walking_oracle(depth, leaf_width):
    fff = make_fff(depth, leaf_width).eval()
    x = torch.randn(40, 6)
    torch.testing.assert_close(fff.leaf_indices(x), fff_leaf_oracle(fff, x), rtol=0, atol=0)
    torch.testing.assert_close(fff.hard_forward(x), fff_hard_oracle(fff, x), rtol=1e-5, atol=1e-5)
    # The plain vectorised path stays correct whichever path hard_forward dispatches to.
    torch.testing.assert_close(
        fff.hard_forward(x, strategy="plain"), fff_hard_oracle(fff, x), **TOLERANCE
    )
    torch.testing.assert_close(fff(x), fff.hard_forward(x), rtol=0, atol=0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_soft_forward_and_entropies_equal_mixture_oracle(depth):
    fff = make_fff(depth, 4, hardening=1.0)
    x = torch.randn(20, 6)
    expected, entropies = fff_soft_oracle(fff, x)
    torch.testing.assert_close(fff.soft_forward(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fff.node_entropy, entropies.mean(0), rtol=1e-5, atol=1e-5)
    assert fff.node_entropy.shape == (2**depth - 1,)
    assert not fff.node_entropy.requires_grad
    assert (fff.node_entropy <= math.log(2) + 1e-6).all()


def test_train_runs_soft_and_eval_runs_hard():
    fff = make_fff(3).train()
    x = torch.randn(10, 6)
    torch.testing.assert_close(fff(x), fff.soft_forward(x), rtol=0, atol=0)
    assert not torch.allclose(fff.soft_forward(x), fff.hard_forward(x))
    fff.eval()
    torch.testing.assert_close(fff(x), fff.hard_forward(x), rtol=0, atol=0)


def test_batch_of_sequences_matches_flat_batch():
    fff = make_fff(3)
    x = torch.randn(4, 5, 6)
    flat = x.reshape(20, 6)
    assert fff.soft_forward(x).shape == (4, 5, 3)
    torch.testing.assert_close(fff.soft_forward(x).reshape(20, 3), fff.soft_forward(flat))
    torch.testing.assert_close(fff.hard_forward(x).reshape(20, 3), fff.hard_forward(flat))
    assert fff.leaf_indices(x).shape == (4, 5)
    # Non-contiguous inputs work too.
    torch.testing.assert_close(
        fff.hard_forward(x.transpose(0, 1)), fff_hard_oracle(fff, x.transpose(0, 1))
    )


def test_empty_batch():
    fff = make_fff(2)
    assert fff.hard_forward(torch.randn(0, 6)).shape == (0, 3)
    assert fff.hard_forward(torch.randn(0, 6), strategy="plain").shape == (0, 3)
    assert fff.soft_forward(torch.randn(0, 6)).shape == (0, 3)


def test_logit_exactly_zero_goes_right():
    fff = make_fff(3)
    with torch.no_grad():
        fff.node_biases.zero_()
    x = torch.zeros(2, 6)
    assert fff.leaf_indices(x).tolist() == [fff.n_leaves - 1] * 2
    expected = fff_leaf_output(fff, fff.n_leaves - 1, x[0])
    torch.testing.assert_close(fff.hard_forward(x), expected.expand(2, 3))


def test_plain_hard_path_chunks_large_batches(monkeypatch):
    from fastff.layers.kernels import plain

    fff = make_fff(4, 8)
    x = torch.randn(37, 6)
    expected = fff.hard_forward(x, strategy="plain")
    # Force chunks of one input: same output.
    monkeypatch.setattr(plain, "HARD_GATHER_BUDGET_BYTES", 1)
    torch.testing.assert_close(fff.hard_forward(x, strategy="plain"), expected, rtol=0, atol=0)
    torch.testing.assert_close(expected, fff_hard_oracle(fff, x), **TOLERANCE)


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_saturated_nodes_make_soft_equal_hard(depth):
    fff = make_fff(depth, 4)
    saturate(fff)
    x = torch.randn(50, 6)
    torch.testing.assert_close(fff.soft_forward(x), fff.hard_forward(x), rtol=1e-5, atol=1e-5)
    assert fff.node_entropy.max() < 1e-4


def test_gradients_reach_nodes_and_leaves_in_soft_mode():
    fff = make_fff(3, hardening=1.0)
    (fff.soft_forward(torch.randn(16, 6)).square().sum() + fff.aux_loss).backward()
    for name, parameter in fff.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_frozen_tree_never_trains_nodes():
    fff = make_fff(3, hardening=1.0, frozen_tree=True)
    assert not fff.node_weights.requires_grad and not fff.node_biases.requires_grad
    x = torch.randn(16, 6, requires_grad=True)
    (fff.soft_forward(x).square().sum() + fff.aux_loss).backward()
    assert fff.node_weights.grad is None and fff.node_biases.grad is None
    assert fff.w1s.grad is not None and fff.w1s.grad.abs().sum() > 0
    # The entropy is still measured, and still differentiable with respect to the input.
    assert fff.node_entropy.shape == (7,) and fff.aux_loss > 0
    # Re-enabling requires_grad from outside does not unfreeze the tree.
    fff.requires_grad_(True)
    fff.soft_forward(x).sum().backward()
    assert fff.node_weights.grad is None


def test_aux_loss_gradient_reaches_nodes_only():
    fff = make_fff(3, hardening=2.0)
    fff.soft_forward(torch.randn(16, 6))
    fff.aux_loss.backward()
    assert fff.node_weights.grad.abs().sum() > 0
    assert fff.w1s.grad is None


def test_region_leak_one_swaps_every_decision():
    leaky = make_fff(3, region_leak=1.0).train()
    mirrored = make_fff(3)
    with torch.no_grad():
        # sigmoid(-z) = 1 - sigmoid(z): negated nodes decide exactly the swapped way.
        mirrored.node_weights.neg_()
        mirrored.node_biases.neg_()
    x = torch.randn(20, 6)
    torch.testing.assert_close(leaky(x), mirrored.soft_forward(x))
    # Nodes that surely go right send everything to the leftmost leaf instead.
    with torch.no_grad():
        leaky.node_weights.zero_()
        leaky.node_biases.fill_(100.0)
    expected = torch.stack([fff_leaf_output(leaky, 0, sample) for sample in x])
    torch.testing.assert_close(leaky(x), expected)


def test_region_leak_zero_and_eval_mode_leave_decisions_alone():
    x = torch.randn(20, 6)
    plain = make_fff(3).soft_forward(x)
    torch.testing.assert_close(make_fff(3, region_leak=0.0).train()(x), plain)
    torch.testing.assert_close(make_fff(3, region_leak=1.0).eval().soft_forward(x), plain)


def test_region_leak_is_drawn_per_input_and_node():
    fff = make_fff(2, region_leak=0.5).train()
    with torch.no_grad():
        fff.node_weights.zero_()
        fff.node_biases.fill_(100.0)  # every node surely goes right unless transposed
    x = torch.randn(1, 6).expand(4000, 6)
    torch.manual_seed(1)
    y = fff(x)
    leaf_outputs = torch.stack([fff_leaf_output(fff, leaf, x[0]) for leaf in range(4)])
    distances = (y[:, None, :] - leaf_outputs[None]).abs().amax(dim=-1)  # (inputs, leaves)
    assert distances.min(dim=1).values.max() < 1e-5  # every input reached exactly one leaf
    reached = distances.argmin(dim=1)
    # Independent draws per input and per node: the four leaves are equally likely.
    shares = torch.bincount(reached, minlength=4).float() / len(x)
    assert ((shares - 0.25).abs() < 0.04).all(), shares


def test_dropout_only_in_training():
    fff = make_fff(2, 32, dropout=0.5)
    x = torch.randn(8, 6)
    fff.train()
    assert not torch.allclose(fff(x), fff(x))
    fff.eval()
    torch.testing.assert_close(fff.soft_forward(x), make_fff(2, 32).soft_forward(x))


@pytest.mark.parametrize("shape", [(12, 6), (3, 4, 6)])
def test_hardening_mean_and_sum(shape):
    x = torch.randn(shape)
    mean = make_fff(3, hardening=3.0)
    total = make_fff(3, hardening=3.0, hardening_reduction="sum")
    mean.soft_forward(x)
    total.soft_forward(x)
    _, entropies = fff_soft_oracle(mean, x)  # (inputs, nodes)
    torch.testing.assert_close(mean.aux_loss, 3.0 * entropies.mean())
    torch.testing.assert_close(mean.aux_loss, 3.0 * mean.node_entropy.mean())
    torch.testing.assert_close(total.aux_loss, 3.0 * entropies.sum())
    torch.testing.assert_close(total.aux_loss, mean.aux_loss * entropies.numel())
    assert mean.aux_loss.requires_grad


def test_aux_loss_is_zero_after_hard_forward_and_at_depth_zero():
    fff = make_fff(3, hardening=1.0)
    assert fff.aux_loss.item() == 0.0 and fff.node_entropy is None
    fff.soft_forward(torch.randn(4, 6))
    assert fff.aux_loss.item() > 0
    entropy = fff.node_entropy
    fff.eval()(torch.randn(4, 6))
    assert fff.aux_loss.item() == 0.0 and fff.aux_loss.shape == ()
    assert fff.node_entropy is entropy  # still the last training forward's, for logging
    leaf_only = make_fff(0, hardening=1.0)
    leaf_only.soft_forward(torch.randn(4, 6))
    assert leaf_only.aux_loss.item() == 0.0 and leaf_only.node_entropy.shape == (0,)


def test_parameters_names_shapes_and_init_bounds():
    fff = FFF(9, 5, 4, 3)
    shapes = {name: tuple(p.shape) for name, p in fff.named_parameters()}
    assert shapes == {
        "node_weights": (7, 9),
        "node_biases": (7, 1),
        "w1s": (8, 9, 4),
        "b1s": (8, 4),
        "w2s": (8, 4, 5),
        "b2s": (8, 5),
    }
    assert list(fff.state_dict()) == list(shapes)
    for name in ("node_weights", "node_biases", "w1s", "b1s"):
        assert getattr(fff, name).abs().max() <= 1 / 3
    for name in ("w2s", "b2s"):
        assert getattr(fff, name).abs().max() <= 1 / 2
    assert fff.w1s.std() > 0.1  # uniform, not zeros
    assert isinstance(fff.depth, int)


def test_sizes_and_depth_for():
    fff = FFF(16, 10, leaf_width=8, depth=4)
    assert fff.training_width == 128 and fff.inference_width == 8
    assert fff.training_size == 15 + 128 and fff.inference_size == 12
    assert FFF.depth_for(128, 8) == 4 and FFF.depth_for(8, 8) == 0 and FFF.depth_for(128, 1) == 7
    for width, leaf_width in [(96, 8), (4, 8), (130, 1)]:
        with pytest.raises(ValueError, match="width must be leaf_width \\* 2\\*\\*depth"):
            FFF.depth_for(width, leaf_width)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "tanh", torch.nn.Softsign()])
def test_activation_by_name_or_module(activation):
    fff = make_fff(2, activation=activation)
    x = torch.randn(10, 6)
    torch.testing.assert_close(fff.hard_forward(x), fff_hard_oracle(fff, x))
    torch.testing.assert_close(fff.soft_forward(x), fff_soft_oracle(fff, x)[0])


def test_extra_repr_names_the_configuration():
    text = repr(FFF(4, 2, 3, 2, hardening=3.0))
    assert "leaf_width=3" in text and "depth=2" in text and "hardening=3.0" in text


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"depth": -1}, "depth"),
        ({"depth": 1.5}, "depth"),
        ({"leaf_width": 0}, "leaf_width"),
        ({"in_features": 0}, "in_features"),
        ({"out_features": 0}, "out_features"),
        ({"region_leak": -0.1}, "region_leak"),
        ({"region_leak": 1.5}, "region_leak"),
        ({"dropout": 1.1}, "dropout"),
        ({"dropout": -0.5}, "dropout"),
        ({"activation": "swishy"}, "activation"),
        ({"hardening": -1.0}, "hardening"),
        ({"hardening": math.inf}, "hardening"),
        ({"hardening_reduction": "max"}, "hardening_reduction"),
        ({"frozen_tree": "yes"}, "frozen_tree"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    arguments = {"in_features": 4, "out_features": 2, "leaf_width": 3, "depth": 2, **kwargs}
    with pytest.raises(ValueError, match=argument):
        FFF(**arguments)


def test_wrong_input_width_raises_value_error():
    fff = make_fff(2)
    for method in (fff.soft_forward, fff.hard_forward, fff.leaf_indices, fff):
        with pytest.raises(ValueError, match="in_features=6"):
            method(torch.randn(3, 5))
    with pytest.raises(ValueError, match="in_features=6"):
        fff(torch.tensor(1.0))


@pytest.mark.slow
def test_soft_path_compiles_without_graph_breaks():
    fff = make_fff(3, region_leak=0.1, dropout=0.1, hardening=1.0).train()
    compiled = torch.compile(fff, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 6)
    torch.manual_seed(3)
    y = compiled(x)
    assert y.shape == (8, 3) and fff.aux_loss.requires_grad
    fff.region_leak, fff.leaf_dropout.p = 0.0, 0.0
    torch.testing.assert_close(compiled(x), fff.soft_forward(x))
    (compiled(x).sum() + fff.aux_loss).backward()
    assert fff.node_weights.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_runs(dtype):
    fff = make_fff(4, 8)
    x = torch.randn(32, 6)
    half = make_fff(4, 8, hardening=1.0).to(dtype)
    soft, hard = half.soft_forward(x.to(dtype)), half.hard_forward(x.to(dtype))
    assert soft.dtype == dtype and hard.dtype == dtype
    torch.testing.assert_close(half.hard_forward(x.to(dtype), strategy="plain"), hard)
    torch.testing.assert_close(soft.float(), fff.soft_forward(x), rtol=0.05, atol=0.05)
    agree = fff.leaf_indices(x) == half.leaf_indices(x.to(dtype))
    torch.testing.assert_close(
        hard.float()[agree], fff.hard_forward(x)[agree], rtol=0.05, atol=0.05
    )
    assert agree.float().mean() > 0.8
    # The soft forward ran last: its entropy term is computed in float32.
    half.soft_forward(x.to(dtype))
    assert half.aux_loss.dtype == torch.float32 and 0 < half.aux_loss < math.log(2)


def test_deepcopy_and_pickle_after_a_training_forward():
    fff = make_fff(3, hardening=1.0)
    fff.soft_forward(torch.randn(4, 6))
    clone = copy.deepcopy(fff)
    assert clone.aux_loss.item() == 0.0 and fff.aux_loss.item() > 0
    torch.testing.assert_close(clone.node_entropy, fff.node_entropy)
    restored = pickle.loads(pickle.dumps(fff))
    x = torch.randn(5, 6)
    torch.testing.assert_close(restored.soft_forward(x), fff.soft_forward(x), rtol=0, atol=0)


def test_eval_path_soft_runs_the_mixture_in_eval_mode():
    torch.manual_seed(0)
    fff = FFF(6, 3, leaf_width=2, depth=3, dropout=0.5, region_leak=0.5).eval()
    x = torch.randn(9, 6)
    hard = fff(x)
    fff.eval_path = "soft"
    soft = fff(x)
    fff.eval_path = "hard"
    torch.testing.assert_close(soft, fff_soft_oracle(fff, x)[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(soft, hard)
    torch.testing.assert_close(fff(x), hard, rtol=0, atol=0)
    with pytest.raises(ValueError, match="eval_path must be one of"):
        fff.eval_path = "fuzzy"
