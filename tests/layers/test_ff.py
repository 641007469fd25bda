"""The dense FF baseline: math, shared layer interface and argument checks."""

from __future__ import annotations

import pytest
import torch

from fastff.layers import FF, FFF


def make_ff(**kwargs) -> FF:
    torch.manual_seed(0)
    return FF(6, 3, 16, **kwargs)


@pytest.mark.parametrize("shape", [(10, 6), (2, 5, 6)])
def test_forward_is_linear_activation_linear(shape):
    ff = make_ff(activation="gelu")
    x = torch.randn(shape)
    hidden = torch.nn.functional.gelu(x @ ff.fc1.weight.T + ff.fc1.bias)
    expected = hidden @ ff.fc2.weight.T + ff.fc2.bias
    assert ff(x).shape == (*shape[:-1], 3)
    torch.testing.assert_close(ff(x), expected)


def test_aux_loss_is_always_zero():
    ff = make_ff()
    assert ff.aux_loss.shape == () and ff.aux_loss.item() == 0.0
    ff(torch.randn(4, 6))
    assert ff.aux_loss.item() == 0.0


def test_sizes_equal_hidden_width_and_match_an_fff_of_equal_training_width():
    ff = make_ff()
    assert (ff.training_width, ff.inference_width) == (16, 16)
    assert (ff.training_size, ff.inference_size) == (16, 16)
    assert FFF(6, 3, leaf_width=4, depth=FFF.depth_for(16, 4)).training_width == ff.training_width


def test_dropout_only_in_training():
    ff = make_ff(dropout=0.5)
    x = torch.randn(8, 6)
    ff.train()
    assert not torch.allclose(ff(x), ff(x))
    ff.eval()
    torch.testing.assert_close(ff(x), ff(x), rtol=0, atol=0)


def test_gradients_reach_both_layers():
    ff = make_ff()
    ff(torch.randn(8, 6)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ff.parameters())


def test_extra_repr_names_the_configuration():
    assert "hidden_width=16" in repr(make_ff())


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"in_features": 0}, "in_features"),
        ({"out_features": -1}, "out_features"),
        ({"hidden_width": 0}, "hidden_width"),
        ({"dropout": 2.0}, "dropout"),
        ({"activation": "nope"}, "activation"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        FF(**{"in_features": 6, "out_features": 3, "hidden_width": 16, **kwargs})


def test_wrong_input_width_raises_value_error():
    with pytest.raises(ValueError, match="in_features=6"):
        make_ff()(torch.randn(2, 7))


def test_bfloat16_forward_runs():
    ff = make_ff()
    x = torch.randn(4, 6)
    half = make_ff().to(torch.bfloat16)
    y = half(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ff(x), rtol=0.05, atol=0.05)
