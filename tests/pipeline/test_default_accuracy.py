"""The documented default run reaches its promised hard-inference test accuracy on digits."""

from __future__ import annotations

import pytest

from fastff.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("layer", "at_least"), [("fff", 90.0), ("ff", 95.0)])
def test_default_run_accuracy(make_cfg, layer, at_least):
    results = train(make_cfg(f"layer={layer}", "logger=none", "callbacks.rich_progress_bar=null"))
    assert results["status"] == "finished"
    assert results["G_A"] >= at_least, results
