"""``make gpu-check``: everything a lent GPU machine must show, as one command of at most 8 minutes.

Runs from a plain checkout with the machine's own ``python3`` (torch, triton, lightning, timm,
scikit-learn there; no package index): the wheels ``make gpu-wheels`` saved in ``gpu-wheels/``
(hydra-core, omegaconf, antlr4) are installed with ``--no-deps`` into a temporary folder, and
fastff runs from ``PYTHONPATH=src``. Steps, in priority order, each with its own time limit
(a step that fails or runs out is recorded and the next one runs):

1. ``pytest -m "gpu or triton"`` on the GPU test files (the Triton kernels compiled on CUDA);
2. the benchmark's ``paper_fig3`` (768 -> 768, leaf 32, depths 1..13, batch 1 and 256, MoE up to
   8,192 experts) and ``table1`` on CUDA in bfloat16: FF, FFF ``triton`` with ``triton_grouped``,
   ``plain`` and ``grouped`` beside it, MoE; the correctness gates on; CUDA-event timing;
3. the ``auto`` crossover (``tools/gpu_measure.py crossover``) and the soft training step
   FFF vs FF under bf16 autocast (``tools/gpu_measure.py train-step``);
4. short bf16-mixed trainings of a flat FFF and a ViT FFF on ``data=digits``.

Everything lands in ``gpu-results/`` and one archive, ``gpu-results.tar.gz`` (also copied to
``$OUT`` when that is set), ready to unpack into ``docs/results/gpu/``: ``steps.json`` (status
and seconds per step), ``env.txt``, each step's log and outputs.

``GPU_CHECK_DRY_RUN=1`` (or ``--dry-run``): every step on the CPU with tiny sizes, and the
packages the GPU machine lacks made unimportable except from the wheels' folder, so the
command is known to work before GPU time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "gpu-wheels"
RESULTS = REPO / "gpu-results"
ARCHIVE = REPO / "gpu-results.tar.gz"
TOTAL_S = 465
"""The whole check's budget (installing the wheels included): 8 minutes, less the archive and a
margin; the steps' own limits add up to less."""

DRY_RUN_SLACK = 3
"""The dry run's limits are the GPU run's times this: a shared CPU is slower, not the check."""

ABSENT_ON_GPU = (
    "hydra", "omegaconf", "antlr4", "wandb", "sweeps", "mlxtend", "fastfeedforward",
    "jsonschema", "jsonref", "pydantic", "submitit", "hydra_plugins",
)  # fmt: skip
"""Top-level modules the GPU machine does not have (the dry run makes them unimportable except
from the wheels' folder)."""

BLOCKER = '''
import importlib.abc, importlib.machinery, os, sys

_BLOCKED = set(os.environ["GPU_CHECK_BLOCK"].split(","))
_SITE = os.environ["GPU_CHECK_SITE"]


class _AbsentOnGpu(importlib.abc.MetaPathFinder):
    """Finds the blocked packages only in the wheels' folder, as on the GPU machine."""

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] not in _BLOCKED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path if "." in name else [_SITE])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)",
                                      name=name)
        return spec


sys.meta_path.insert(0, _AbsentOnGpu())
'''

GPU_TESTS = [  # the GPU-only checks first: a step that runs out keeps their results
    "tests/test_gpu_triton.py",
    "tests/layers/test_triton_kernels.py",
    "tests/test_gpu.py",
    "tests/layers/test_fast_paths.py",
]


NO_CPU_KERNEL = {"CXX": "fastff-gpu-check-no-cxx", "FASTFF_FUSED_CPU": "0"}
"""The GPU tests need no C++ CPU kernel: with no compiler named, tests/layers/conftest.py skips
building it (a minute of one core) and the fused_cpu tests, which ``-m "gpu or triton"``
deselects anyway."""


def steps(dry: bool) -> list[tuple[str, int, list[str], dict[str, str]]]:
    """(name, time limit in seconds, command, extra environment) of every step, in order."""
    py = sys.executable
    device = "cpu" if dry else "cuda"
    extra = "[plain,grouped]" if dry else "[triton_grouped,plain,grouped]"
    bench = [py, "-m", "fastff.bench", f"device={device}", "wandb.mode=disabled",
             "implementations=[ff,fff,moe]", f"extra_fff_strategies={extra}"]  # fmt: skip
    if dry:
        bench += ["dtype=float32", "fff_strategy=auto", "timing.min_run_time=0.01",
                  "timing.repeats=1", "timing.warmup=1"]  # fmt: skip
        fig3 = ["modes.paper_fig3.max_depth=2", "modes.paper_fig3.batch_sizes=[1,7]"]
        table1 = ["modes.table1.widths=[16]", "modes.table1.leaf_widths=[8]",
                  "modes.table1.batch_sizes=[64]"]  # fmt: skip
        tests = ["-k", "refusals or equals_plain_and_oracle and 0-1-7"]
        train = ["trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                 "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]  # fmt: skip
    else:
        bench += ["dtype=bfloat16", "fff_strategy=triton", "timing.min_run_time=0.03",
                  "timing.repeats=2", "timing.warmup=3"]  # fmt: skip
        fig3 = ["modes.paper_fig3.max_depth=13", "modes.paper_fig3.batch_sizes=[1,256]"]
        table1 = []
        tests = []
        train = ["trainer=gpu", "trainer.max_epochs=5"]
    train += ["data=digits", "layer=fff", "logger=csv", "callbacks.rich_progress_bar=null"]
    measure = [py, "tools/gpu_measure.py"]
    out = RESULTS
    return [
        ("pytest", 170, [py, "-m", "pytest", "-m", "gpu or triton", "-rs", "-v",
                         "--timeout=90", "-p", "no:cacheprovider", f"--junitxml={out}/pytest.xml",
                         *tests, *GPU_TESTS], NO_CPU_KERNEL),
        ("bench_paper_fig3", 110, [*bench, "mode=paper_fig3", *fig3,
                                   f"hydra.run.dir={out}/bench_paper_fig3"], {}),
        ("crossover", 55, [*measure, "crossover", str(out / "crossover"), f"--device={device}"],
         {}),
        ("bench_table1", 25, [*bench, "mode=table1", *table1,
                              f"hydra.run.dir={out}/bench_table1"], {}),
        ("train_step", 20, [*measure, "train-step", str(out / "train_step"),
                            f"--device={device}"], {}),
        ("train_flat_fff", 25, [py, "-m", "fastff.train", *train,
                                f"hydra.run.dir={out}/train_flat_fff"], {}),
        ("train_vit_fff", 45, [py, "-m", "fastff.train", *train, "model=vit",
                               f"hydra.run.dir={out}/train_vit_fff"], {}),
    ]  # fmt: skip


def cuda_problem() -> str | None:
    """Why this machine cannot run the GPU check, or None when it has a CUDA device."""
    try:
        import torch
    except ImportError as error:
        return f"torch is not importable: {error}"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


def refusal(dry: bool) -> str | None:
    """The one-line error when the check cannot start here (checked before anything is written)."""
    problem = None if dry else cuda_problem()
    if problem:
        return (
            f"error: make gpu-check needs a CUDA GPU ({problem}); "
            "GPU_CHECK_DRY_RUN=1 make gpu-check PYTHON=.venv/bin/python runs every step on the CPU"
        )
    if not any(WHEELS.glob("*.whl")):
        return f"error: no wheels in {WHEELS}: run `make gpu-wheels` first (needs a package index)"
    return None


def install_wheels(site: Path, log) -> None:
    """The saved wheels, without their dependencies, into ``site``."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"no wheels in {WHEELS}: run `make gpu-wheels` first (needs an index)")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
               "--no-compile", "--target", str(site), *map(str, wheels)]  # fmt: skip
    subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


def environment(dry: bool, site: Path, blocker_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO / "src"), str(site)]
    if dry:
        (blocker_dir / "sitecustomize.py").write_text(BLOCKER)
        paths.insert(0, str(blocker_dir))
        env.update(GPU_CHECK_BLOCK=",".join(ABSENT_ON_GPU), GPU_CHECK_SITE=str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(PYTHONUNBUFFERED="1", WANDB_MODE="disabled", PROJECT_ROOT=str(REPO))
    env.pop("TRITON_INTERPRET", None)  # compiled kernels on CUDA; the tests set it on a CPU
    return env


def describe(env: dict[str, str]) -> str:
    """Versions and the device, for env.txt."""
    probe = (
        "import torch, sys; print('python', sys.version.split()[0]); print('torch', "
        "torch.__version__); print('cuda', torch.version.cuda, torch.cuda.is_available()); "
        "print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')\n"
        "try:\n import triton; print('triton', triton.__version__)\n"
        "except ImportError as e: print('triton missing', e)"
    )
    lines = [f"date {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", platform.platform()]
    for command in ([sys.executable, "-c", probe], ["nvidia-smi", "-L"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            lines.append(done.stdout.strip() or done.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as error:
            lines.append(f"{command[0]}: {error}")
    return "\n".join(lines) + "\n"


def run_steps(dry: bool, env: dict[str, str], deadline: float) -> list[dict]:
    records = []
    for name, limit, command, extra_env in steps(dry):
        left = deadline - time.monotonic()
        record = {"step": name, "command": " ".join(command), "limit_s": limit}
        if left < 5:
            records.append({**record, "status": "not run: the check's time budget is spent"})
            continue
        timeout = min(limit * (DRY_RUN_SLACK if dry else 1), left)
        start = time.monotonic()
        print(f"== {name} (at most {timeout:.0f} s)", flush=True)
        with open(RESULTS / f"{name}.log", "w") as log:
            process = subprocess.Popen(
                command, cwd=REPO, env={**env, **extra_env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout ends all of it
            )  # fmt: skip
            try:
                status = "ok" if process.wait(timeout=timeout) == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                status = f"timed out after {timeout:.0f} s"
        record.update(status=status, seconds=round(time.monotonic() - start, 1))
        records.append(record)
        print(f"   {status} in {record['seconds']} s; tail of {name}.log:", flush=True)
        print("".join((RESULTS / f"{name}.log").read_text().splitlines(True)[-6:]), flush=True)
    return records


def archive() -> Path:
    """gpu-results/ as gpu-results.tar.gz (folder ``gpu``), without checkpoints (they stay local,
    as under docs/results)."""

    def no_checkpoints(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name.endswith(".ckpt") else info

    with tarfile.open(ARCHIVE, "w:gz") as tar:
        tar.add(RESULTS, arcname="gpu", filter=no_checkpoints)
    if os.environ.get("OUT"):
        shutil.copy(ARCHIVE, Path(os.environ["OUT"]) / ARCHIVE.name)
    return ARCHIVE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=bool(os.environ.get("GPU_CHECK_DRY_RUN")),
        help="every step on the CPU, tiny (default: $GPU_CHECK_DRY_RUN)",
    )
    args = parser.parse_args()
    if (line := refusal(args.dry_run)) is not None:
        print(line, file=sys.stderr)
        sys.exit(2)
    deadline = time.monotonic() + TOTAL_S * (DRY_RUN_SLACK if args.dry_run else 1)
    shutil.rmtree(RESULTS, ignore_errors=True)
    RESULTS.mkdir()
    with tempfile.TemporaryDirectory(prefix="fastff-gpu-check-") as tmp:
        site, blocker_dir = Path(tmp) / "site", Path(tmp) / "blocker"
        blocker_dir.mkdir()
        with open(RESULTS / "install.log", "w") as log:
            install_wheels(site, log)
        env = environment(args.dry_run, site, blocker_dir)
        (RESULTS / "env.txt").write_text(describe(env) + f"dry_run {args.dry_run}\n")
        records = []
        try:
            records = run_steps(args.dry_run, env, deadline)
        finally:
            summary = {"dry_run": args.dry_run, "steps": records}
            (RESULTS / "steps.json").write_text(json.dumps(summary, indent=2))
            print(f"wrote {archive()}", flush=True)
    failed = [r["step"] for r in records if r["status"] != "ok"]
    print("all steps ok" if not failed else f"steps not ok: {failed}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
