"""GPU measurements that the benchmark's modes do not make, for ``make gpu-check``.

``python tools/gpu_measure.py crossover OUT_DIR``: the hard FFF strategies (``triton``,
``triton_grouped``, ``plain``, ``grouped``, ``gather``) over batch sizes at 768 -> 768, leaf
width 32, depths 4, 8, 11 and 13 in bfloat16: from which batch ``triton_grouped`` (rows sorted
by leaf, tile matrix products) overtakes the one-program-per-row ``triton`` kernel, which is
where ``auto``'s rule (``TRITON_GROUPED_MIN_ROWS_PER_LEAF``) should put the switch; beside each
time the HBM read bound (bytes of the inputs, outputs and reached weights / 4.8 TB/s) and one
kernel launch (a one-element add). Writes crossover.csv and crossover.json (per depth, the
smallest batch where ``triton_grouped`` beats ``triton``, or null, and the fastest strategy per
batch). Every timed strategy is first checked against ``plain`` on the same inputs.

``python tools/gpu_measure.py train-step OUT_DIR``: one soft training step (forward, backward,
Adam step) of FFF against the FF of equal training width, under bf16 autocast (Lightning's
``bf16-mixed``), float32 weights. Writes train_step.csv.

``--device cpu`` (the dry run of ``make gpu-check``): the same code on tiny sizes, timed with
``time.perf_counter``; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from fastff.bench.timing import CudaEventTimer
from fastff.layers import FF, FFF

HBM_BYTES_PER_S = 4.8e12
"""An H200's HBM bandwidth by the vendor's datasheet."""


def seconds_per_call(call: Callable[[], Any], device: str, min_run_time: float) -> float:
    """Median seconds per call: CUDA events on CUDA, perf_counter blocks on the CPU."""
    for _ in range(3):
        call()
    if device == "cuda":
        return CudaEventTimer(call).blocked_autorange(min_run_time).median
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_run_time:
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _fff(depth: int, sizes: tuple[int, int, int], device: str, dtype: torch.dtype) -> FFF:
    features, leaf, out = sizes
    torch.manual_seed(depth)
    return FFF(features, out, leaf, depth).to(device, dtype).eval()


def reached_bytes(layer: FFF, batch: int, element: int) -> int:
    """Bytes the hard forward must read and write at least: inputs, outputs, and per row its
    path's node rows and its leaf's weights (upper bound: no two rows share a leaf)."""
    d, l, o = layer.in_features, layer.leaf_width, layer.out_features
    distinct = min(batch, layer.n_leaves)
    per_leaf = d * l + l + l * o + o
    nodes = min(batch * layer.depth, layer.n_nodes) * (d + 1)
    return element * (batch * (d + o) + distinct * per_leaf + nodes)


def crossover(out: Path, device: str) -> None:
    dry = device == "cpu"
    dtype = torch.float32 if dry else torch.bfloat16
    sizes = (24, 8, 16) if dry else (768, 32, 768)
    depths = [2, 4] if dry else [4, 8, 11, 13]
    batches = [1, 7, 64] if dry else [1, 16, 64, 256, 1024, 4096, 16384, 65536]
    strategies = ["plain", "grouped", "gather"] + ([] if dry else ["triton", "triton_grouped"])
    min_run_time = 0.01 if dry else 0.03
    tiny = torch.zeros(1, device=device)
    launch_s = seconds_per_call(lambda: tiny.add_(1.0), device, min_run_time)
    rows = []
    for depth in depths:
        layer = _fff(depth, sizes, device, dtype)
        for batch in batches:
            torch.manual_seed(batch)
            x = torch.randn(batch, sizes[0], device=device).to(dtype)
            with torch.inference_mode():
                reference = layer.hard_forward(x, "plain")
                for strategy in strategies:
                    if strategy == "gather" and batch * layer.leaf_width * sum(sizes[::2]) > 2**31:
                        continue  # gathers every row's leaf at once: tens of GB
                    y = layer.hard_forward(x, strategy)
                    # rows whose route is within rounding of a tie may take another leaf
                    same = torch.isclose(y.float(), reference.float(), rtol=5e-2, atol=5e-2)
                    agree = float(same.all(dim=1).float().mean())
                    if agree < 0.99:
                        raise SystemExit(f"{strategy} disagrees with plain at depth {depth}, "
                                         f"batch {batch}: {agree:.3f} of rows agree")  # fmt: skip
                    seconds = seconds_per_call(
                        lambda s=strategy, x=x, m=layer: m.hard_forward(x, s), device, min_run_time
                    )
                    bound = reached_bytes(layer, batch, x.element_size()) / HBM_BYTES_PER_S
                    rows.append({
                        "depth": depth, "batch": batch, "strategy": strategy, "ms": seconds * 1e3,
                        "read_bound_ms": bound * 1e3, "launch_ms": launch_s * 1e3,
                        "rows_agreeing_with_plain": agree,
                    })  # fmt: skip
                    print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "crossover.csv", index=False)
    summary: dict[str, Any] = {"device": device, "dtype": str(dtype), "sizes": sizes}
    per_row, grouped = ("gather", "grouped") if dry else ("triton", "triton_grouped")
    for depth in depths:
        table = frame[frame.depth == depth].pivot(index="batch", columns="strategy", values="ms")
        wins = table.index[table[grouped] < table[per_row]]
        summary[f"depth_{depth}_{grouped}_beats_{per_row}_from_batch"] = (
            int(wins.min()) if len(wins) else None
        )
        summary[f"depth_{depth}_fastest"] = table.idxmin(axis=1).to_dict()
    (out / "crossover.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def train_step(out: Path, device: str) -> None:
    dry = device == "cpu"
    features, leaf, batch = (24, 4, 16) if dry else (768, 32, 256)
    depths = [1, 2] if dry else [2, 4, 6, 8]
    min_run_time = 0.01 if dry else 0.05
    rows = []
    for depth in depths:
        width = leaf * 2**depth
        torch.manual_seed(depth)
        layers: dict[str, nn.Module] = {
            "FF": FF(features, features, width),
            "FFF": FFF(features, features, leaf, depth, hardening=3.0),
        }
        x = torch.randn(batch, features, device=device)
        row: dict[str, Any] = {"depth": depth, "training_width": width, "batch": batch}
        for name, layer in layers.items():
            layer = layer.to(device).train()
            optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if device == "cuda"
                else contextlib.nullcontext()
            )

            def step(
                layer: nn.Module = layer, optimizer: Any = optimizer, x: torch.Tensor = x,
                autocast: Any = autocast,
            ) -> None:  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = layer(x).float().square().mean() + layer.aux_loss.float()
                loss.backward()
                optimizer.step()

            row[f"t_{name}_ms"] = seconds_per_call(step, device, min_run_time) * 1e3
        row["FFF/FF"] = row["t_FFF_ms"] / row["t_FF_ms"]
        rows.append(row)
        print(row, flush=True)
    pd.DataFrame(rows).to_csv(out / "train_step.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["crossover", "train-step"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (crossover if args.what == "crossover" else train_step)(args.out, args.device)


if __name__ == "__main__":
    main()
