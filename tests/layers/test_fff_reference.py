"""Agreement with the reference package ``fastfeedforward`` 0.2.1 on identical weights.

The reference's constructor order is (input_width, leaf_width, output_width, depth); ours is
(in_features, out_features, leaf_width, depth). Its ``training_forward(use_hard_decisions=True)``
is the correct hard output (every bias kept); its ``eval_forward`` is not (see the defect tests).
"""

from __future__ import annotations

import fastfeedforward
import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle

from fastff.layers import FFF

IN, OUT = 7, 5
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
ENTROPY_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
TIE_MARGIN = 1e-6


def reference_fff(depth: int, leaf_width: int, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return fastfeedforward.FFF(IN, leaf_width, OUT, depth, **kwargs)


def far_from_ties(reference, x: torch.Tensor) -> torch.Tensor:
    """Mask (...,) of inputs whose node logits are all further than TIE_MARGIN from 0.

    The reference's hard training forward rounds p = 0.5 to the left; we send logit 0 right.
    """
    logits = x @ reference.node_weights.T + reference.node_biases.T
    return (logits.abs() > TIE_MARGIN).all(dim=-1)


@pytest.mark.parametrize("depth", range(9))
@pytest.mark.parametrize("leaf_width", [1, 2, 5, 32])
@pytest.mark.parametrize("shape", [(24, IN), (3, 8, IN)])
def test_soft_hard_and_entropies_agree_with_reference(depth, leaf_width, shape):
    reference = reference_fff(depth, leaf_width)
    ours = FFF.from_reference(reference)
    x = torch.randn(shape)
    with torch.no_grad():
        expected, expected_entropies = reference.training_forward(x, return_entropies=True)
        expected_hard = reference.training_forward(x, use_hard_decisions=True)
        soft, hard = ours.soft_forward(x), ours.hard_forward(x)
    torch.testing.assert_close(soft, expected, **TOLERANCE)
    torch.testing.assert_close(ours.node_entropy, expected_entropies, **ENTROPY_TOLERANCE)
    keep = far_from_ties(reference, x)
    assert keep.float().mean() > 0.9
    torch.testing.assert_close(hard[keep], expected_hard[keep], **TOLERANCE)


@pytest.mark.parametrize(
    "factory", [{}, {"device": "cpu", "dtype": torch.float32}, {"device": torch.device("cpu")}]
)
def test_same_seed_draws_the_same_initial_weights(factory):
    reference = reference_fff(4, 3, seed=11)
    after_reference = torch.rand(3)
    torch.manual_seed(11)
    ours = FFF(IN, OUT, leaf_width=3, depth=4, **factory)
    for name, parameter in ours.named_parameters():
        assert parameter.dtype == torch.float32 and parameter.device.type == "cpu"
        assert torch.equal(parameter, getattr(reference, name)), name
    # both consume the same random numbers: the stream continues identically
    assert torch.equal(torch.rand(3), after_reference)


def test_training_mode_with_region_leak_and_dropout_matches_reference_draws():
    # Transpositions are drawn per level and leaf dropout per activation in the reference's
    # order, so equal seeds give equal training outputs.
    reference = reference_fff(4, 8, dropout=0.3, region_leak=0.4)
    ours = FFF.from_reference(reference)
    assert ours.training and ours.dropout == 0.3 and ours.region_leak == 0.4
    x = torch.randn(32, IN)
    torch.manual_seed(5)
    expected = reference(x)
    torch.manual_seed(5)
    torch.testing.assert_close(ours(x), expected, **TOLERANCE)


def test_reference_eval_forward_drops_the_leaf_output_bias():
    """Defect 1 of the reference: its eval_forward leaves out b2s. Ours keeps it, on purpose."""
    reference = reference_fff(3, 4).eval()
    ours = FFF.from_reference(reference)
    x = torch.randn(16, IN)
    with torch.no_grad():
        reference_eval = reference(x)
        ours_hard = ours(x)
        expected_hard = reference.training_forward(x, use_hard_decisions=True)
    leaves = fff_leaf_oracle(ours, x)
    torch.testing.assert_close(ours_hard, expected_hard, **TOLERANCE)
    torch.testing.assert_close(reference_eval + reference.b2s[leaves], ours_hard, **TOLERANCE)
    assert not torch.allclose(reference_eval, ours_hard, atol=1e-3)


def test_reference_eval_forward_crashes_at_depth_zero_ours_does_not():
    """Defect 3 of the reference: depth 0 passes validation but eval_forward fails."""
    reference = reference_fff(0, 4).eval()
    ours = FFF.from_reference(reference)
    x = torch.randn(6, IN)
    with pytest.raises(Exception):  # noqa: B017 - the reference fails with an unbound local name
        reference(x)
    with torch.no_grad():
        expected = reference.training_forward(x, use_hard_decisions=True)
    torch.testing.assert_close(ours(x), expected, **TOLERANCE)
    torch.testing.assert_close(ours(x), fff_hard_oracle(ours, x), **TOLERANCE)


def test_ties_go_right_like_reference_eval_not_its_rounding():
    """Defect 4 of the reference: a logit of exactly 0 goes left in its training rounding
    (round(0.5) = 0) but right in its eval_forward. Ours goes right, as the paper's c >= 1/2."""
    reference = reference_fff(2, 3).eval()
    with torch.no_grad():
        reference.node_biases.zero_()
    ours = FFF.from_reference(reference)
    x = torch.zeros(1, IN)
    last = ours.n_leaves - 1
    with torch.no_grad():
        rounded_left = reference.training_forward(x, use_hard_decisions=True)
        eval_right = reference(x)
    assert ours.leaf_indices(x).item() == last
    leaf_zero = torch.relu(reference.b1s[0]) @ reference.w2s[0] + reference.b2s[0]
    torch.testing.assert_close(rounded_left[0], leaf_zero, **TOLERANCE)
    torch.testing.assert_close(ours(x), eval_right + reference.b2s[last], **TOLERANCE)


def test_from_reference_round_trip():
    reference = reference_fff(3, 4, activation=torch.nn.GELU(), usage_mode="hard").eval()
    ours = FFF.from_reference(reference, hardening=2.0, frozen_tree=True)
    assert not ours.training and isinstance(ours.activation, torch.nn.GELU)
    assert ours.activation is not reference.activation
    assert ours.hardening == 2.0 and not ours.node_weights.requires_grad
    assert set(ours.state_dict()) == {"node_weights", "node_biases", "w1s", "b1s", "w2s", "b2s"}
    # Our state_dict plus the stored depth loads back into a fresh reference.
    back = reference_fff(3, 4, seed=1, activation=torch.nn.GELU())
    back.load_state_dict({**ours.state_dict(), "depth": torch.tensor(3)})
    for name in ("node_weights", "node_biases", "w1s", "b1s", "w2s", "b2s"):
        assert torch.equal(getattr(back, name), getattr(reference, name)), name
    x = torch.randn(10, IN)
    with torch.no_grad():
        torch.testing.assert_close(ours.soft_forward(x), back.training_forward(x), **TOLERANCE)
        hard = back.training_forward(x, use_hard_decisions=True)
        torch.testing.assert_close(ours.hard_forward(x), hard, **TOLERANCE)


def test_load_reference_state_dict_checks_depth_and_ignores_usage():
    reference = reference_fff(3, 4, usage_mode="soft")
    state = reference.state_dict()
    assert {"depth", "node_usage", "leaf_usage"} <= set(state)
    ours = FFF(IN, OUT, leaf_width=4, depth=3)
    ours.load_reference_state_dict(state)
    for name, parameter in ours.named_parameters():
        assert torch.equal(parameter, state[name]), name
    with pytest.raises(ValueError, match="depth"):
        FFF(IN, OUT, leaf_width=4, depth=2).load_reference_state_dict(state)
    with pytest.raises(ValueError, match="w1s"):
        FFF(IN, OUT, leaf_width=5, depth=3).load_reference_state_dict(state)
    with pytest.raises(ValueError, match="b2s"):
        ours.load_reference_state_dict({k: v for k, v in state.items() if k != "b2s"})
    with pytest.raises(ValueError, match="unexpected"):
        ours.load_reference_state_dict({**state, "extra": torch.zeros(1)})
