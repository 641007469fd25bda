"""Compile fastff's Triton kernels ahead of time for NVIDIA GPUs, with no GPU present.

Triton's front end, its LLVM passes and ptxas run as they do on a device, so this catches what
the interpreter does not check (non-constexpr globals, type rules of the compiler). Run in a
process without ``TRITON_INTERPRET`` (triton then defines even its own library functions for
the interpreter): ``python tests/layers/triton_aot.py``; prints one line per compiled kernel.
"""

from __future__ import annotations

import triton
from triton.backends.compiler import GPUTarget

from fastff.layers.kernels import triton_hard, triton_jit

# (pointer type, (in, leaf width, out), activation code, compute capability)
CONFIGS = [
    ("*bf16", (768, 32, 768), 3, 90),  # the paper's 768 -> 768 layer on an H200
    ("*fp16", (20, 33, 9), 4, 90),
    ("*fp32", (5, 1, 3), 2, 80),
    ("*fp32", (64, 2000, 64), 1, 90),  # a leaf wider than one tile
]


INDEX_POINTERS = ("experts_ptr", "leaves_ptr", "order_ptr", "sorted_leaves_ptr")


def kernels_for(pointer_type: str, sizes: tuple[int, int, int]) -> list[tuple]:
    """(kernel, constants, num_warps) of every kernel launch fastff makes at these sizes."""
    blocks = triton_hard.block_sizes(*sizes)
    warps = blocks.pop("num_warps")
    grouped = triton_hard.grouped_block_sizes(*sizes)
    grouped_warps = grouped.pop("num_warps")
    precision = "ieee" if pointer_type == "*fp32" else "tf32"
    route = {"BLOCK_M": triton_hard.ROUTE_BLOCK_M, "BLOCK_WALK": 128}
    return [
        (triton_jit.fff_hard_kernel, {"DEPTH": 11, "BLOCK_WALK": 1024, **blocks}, warps),
        (triton_jit.fff_hard_kernel, {"DEPTH": 0, "BLOCK_WALK": 16, **blocks}, warps),
        (triton_jit.pair_kernel, {"PAIRS_PER_ROW": 2, **blocks}, warps),
        (triton_jit.route_kernel, {"DEPTH": 11, **route}, 4),
        (
            triton_jit.grouped_leaf_kernel,
            {"DOT_PRECISION": precision, "UPCAST_DOT": False, **grouped},
            grouped_warps,
        ),
    ]


def compile_for(fn, pointer_type: str, constants: dict, num_warps: int, capability: int):
    """``fn`` compiled for CUDA compute capability ``capability``: pointers of
    ``pointer_type``, ``act_param`` float32, other runtime arguments int64."""

    def kind(name: str) -> str:
        if name in constants:
            return "constexpr"
        if name in INDEX_POINTERS:
            return "*i64"
        if name.endswith("_ptr"):
            return pointer_type
        return "fp32" if name == "act_param" else "i64"

    signature = {name: kind(name) for name in fn.arg_names}
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants, attrs={})
    target = GPUTarget("cuda", capability, 32)
    options = triton.compiler.make_backend(target).parse_options({"num_warps": num_warps})
    return triton.compiler.compile(source, target=target, options=options.__dict__)


def main() -> None:
    assert not triton_jit.INTERPRETED, "run without TRITON_INTERPRET=1"
    for pointer_type, sizes, activation, capability in CONFIGS:
        for fn, constants, num_warps in kernels_for(pointer_type, sizes):
            if "ACT" in fn.arg_names:
                constants = {"ACT": activation, **constants}
            compiled = compile_for(fn, pointer_type, constants, num_warps, capability)
            assert compiled.asm["cubin"]
            print("compiled", fn.__name__, pointer_type, sizes, f"sm_{capability}", flush=True)


if __name__ == "__main__":
    main()
