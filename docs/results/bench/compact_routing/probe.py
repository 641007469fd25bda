"""Probe: fp32 / bf16 / int8 hard FFF at depth 11, 768->768, leaf 32, batch 256.
random routing (memory-bound) vs every row to one leaf (cache-resident: compute-bound)."""
import sys, torch, copy
from torch.utils import benchmark
import fastff
from fastff.layers import FFF
torch.manual_seed(0)
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
f = FFF(768, 768, 32, 11).eval()
x = torch.randn(256, 768)
one = copy.deepcopy(f)
with torch.no_grad():
    one.node_weights.zero_()
    if hasattr(one, "node_biases"): one.node_biases.fill_(1.0)
mods = {}
for name, base in (("rand", f), ("one", one)):
    mods[f"{name}_fp32"] = base
    mods[f"{name}_bf16"] = fastff.quantize(base, "bf16")
    mods[f"{name}_int8"] = fastff.quantize(base, "int8")
res = {}
with torch.inference_mode():
    for rnd in range(3):
        for k, m in mods.items():
            t = benchmark.Timer("m(x)", globals={"m": m, "x": x}, num_threads=threads).blocked_autorange(min_run_time=0.5)
            res.setdefault(k, []).append(t.median * 1e3)
for k, v in res.items():
    print(f"{k:10s} {sorted(v)[1]:.3f} ms")
