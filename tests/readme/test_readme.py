"""Every bash and python block of README.md runs as a new user would run it, so the README
cannot drift from the code.

Each README command has a plan below, keyed by its text: run it as written (quick ones), run it
with tiny settings appended (trainings: ``trainer.max_epochs=1``; benchmarks: one size, one
timing round; a sweep: two trials of one epoch), expect its documented one-line error (no
network, no GPU, no W&B login, no SLURM), or, for what cannot run inside the test suite (the
suite itself, installing wheels from an index), check the recipe ``make`` would run. A README
command without a plan, or a plan without a command, fails ``test_every_command_has_a_plan``.

Everything runs in one scratch folder (``outputs/``, ``data/`` and the exported files land there)
with the test's interpreter first on the PATH (as after ``source .venv/bin/activate``), a fresh
home without W&B credentials, and ``offline/sitecustomize.py`` first on PYTHONPATH: no
connection leaves the machine. ``make`` lines run the recipe ``make -n`` prints, with the install
stamp taken as up to date, so the test never installs anything.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from readme_blocks import README, ROOT, Block, make_script, readme_blocks

from fastff.layers.kernels.cpu_build import extensions_root

RUN_NAME = "2026-01-01_00-00-00_000000"
"""The ``<date_time>`` of the run the README's checkpoint commands read."""
CHECKPOINT = f"outputs/train/runs/{RUN_NAME}/checkpoints/last.ckpt"
FASTFF_PREFIXES = ("error:", "warning:", "fastff:")
"""How every line fastff itself writes to stderr begins."""

TRAIN = ("trainer.max_epochs=1", "logger=none")
FEW = (
    *TRAIN,
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
)
"""One epoch of two batches per split: for the ViTs, multiruns and DDP."""
BENCH = ("timing.min_run_time=0.01", "timing.repeats=1", "timing.warmup=1")
FIG3 = (*BENCH, "modes.paper_fig3.max_depth=2", "modes.paper_fig3.batch_sizes=[1,7]")
TABLE1 = (
    *BENCH,
    "modes.table1.widths=[16]",
    "modes.table1.leaf_widths=[8]",
    "modes.table1.batch_sizes=[64]",
)
STEP = (*BENCH, "modes.train.depths=[2]", "modes.train.batch_sizes=[16]")
STEP_VIT = (*BENCH, "modes.train_vit.leaf_widths=[32]", "modes.train_vit.batch_sizes=[2]")

HAS_CUDA = torch.cuda.is_available()
HAS_SLURM = shutil.which("srun") is not None


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in (self.stdout + self.stderr).splitlines() if line.strip()]


Check = Callable[[Result, Path], None]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How the test runs one README command.

    Attributes:
        extra: arguments appended to the command (to ``ARGS`` for a make line).
        status: the expected exit status.
        line: the expected output is one line starting with this (a documented error).
        check: more checks on the result and the scratch folder.
        recipe: only check that ``make -n`` prints this (the command cannot run in a test).
        help: instead of the command (another program's, needing a server), run these with
            ``--help``.
        skip: the reason the command does not run on this machine (None: it runs).
        quiet: stderr holds nothing but fastff's own lines.
    """

    extra: tuple[str, ...] = ()
    status: int = 0
    line: str | None = None
    check: Check | None = None
    recipe: str | None = None
    help: tuple[str, ...] = ()
    skip: str | None = None
    quiet: bool = False


def run_tiny(*extra: str, check: Check | None = None, quiet: bool = True) -> Plan:
    return Plan(extra=extra, check=check, quiet=quiet)


def one_line(start: str, status: int = 2, check: Check | None = None) -> Plan:
    return Plan(status=status, line=start, check=check)


# -- checks on results -----------------------------------------------------------------------------


def contains(*texts: str) -> Check:
    def check(result: Result, work: Path) -> None:
        for text in texts:
            assert text in result.stdout + result.stderr, text

    return check


def no_data_folder(name: str = "data") -> Check:
    def check(result: Result, work: Path) -> None:
        assert not (work / name).exists(), f"a failed download left {name}/ behind"

    return check


def fetch_failed(result: Result, work: Path) -> None:
    """``make data`` without network: one ``<name>: FAILED: ...`` line per dataset, a summary."""
    assert result.lines, "no output"
    for line in result.lines:
        assert re.match(r"(\w+: FAILED: dataset '\w+' not found in |could not fetch )", line), line
    assert result.lines[-1].startswith("could not fetch")
    no_data_folder()(result, work)
    no_data_folder("datasets")(result, work)


def summary_table(result: Result, work: Path) -> None:
    assert "G_A" in result.stdout, result.stdout[-2000:]


def bench_table(result: Result, work: Path) -> None:
    """The printed tables fit 100 columns (from the first table's title on; the lines naming
    the output files are paths)."""
    lines = result.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("fastff bench")) :]
    widths = [len(line) for line in lines if not line.startswith(("Results: ", "Plots: "))]
    assert widths and max(widths) <= 100, max(widths)
    assert "FF/FFF" in result.stdout or "FFF" in result.stdout


def eval_json_where_the_readme_says(result: Result, work: Path) -> None:
    written = glob.glob(str(work / "outputs/eval/runs/*/eval.json"))
    assert written, "eval.json is not in outputs/eval/runs/<date_time>/"
    assert "results in " in result.stdout


def exported(name: str) -> Check:
    def check(result: Result, work: Path) -> None:
        assert (work / name).is_file()
        assert not (work / f"{name}.data").exists(), "the ONNX file is not self-contained"
        assert glob.glob(str(work / "outputs/export/runs/*/export.json"))

    return check


def report_written(folder: str) -> Check:
    def check(result: Result, work: Path) -> None:
        assert (work / folder / "report.md").is_file()
        assert (work / folder / "runs.csv").is_file()

    return check


def lint_clean(result: Result, work: Path) -> None:
    assert "All checks passed" in result.stdout


def cuda_or(plan_with_cuda: Plan, plan_without: Plan) -> Plan:
    return plan_with_cuda if HAS_CUDA else plan_without


NEEDS_4_GPUS = Plan(skip="needs 4 GPUs (or trainer.num_nodes machines)")
DDP_WITHOUT_GPU = one_line("error: trainer", check=contains("trainer=ddp_cpu"))
ONLINE = one_line("error: --online needs a W&B login", check=contains("`wandb login`"))
GPU_CHECK = cuda_or(
    Plan(recipe="tools/gpu_check.py"), one_line("error: make gpu-check needs a CUDA GPU")
)
DRY_GPU_CHECK = (
    Plan(recipe="tools/gpu_check.py")  # minutes; its steps: tests/test_gpu_check.py
    if any((ROOT / "gpu-wheels").glob("*.whl"))
    else one_line("error: no wheels in", check=contains("make gpu-wheels"))
)
SUITE = Plan(recipe="-m pytest")  # this test suite itself


def wandb_sync(result: Result, work: Path) -> None:
    assert glob.glob(str(work / f"outputs/train/runs/{RUN_NAME}/wandb/offline-run-*"))


PLANS: dict[str, Plan] = {
    # Two commands
    "make train": Plan(check=summary_table, quiet=True),  # the default run, in full
    "make test": SUITE,
    "source .venv/bin/activate": Plan(),  # kept for the block's next commands
    "python -m fastff.train layer=ff": run_tiny(*TRAIN, check=summary_table),
    ".venv/bin/python -m fastff.train layer=ff": run_tiny(*TRAIN, check=summary_table),
    ".venv/bin/fastff-train layer=ff": run_tiny(*TRAIN, check=summary_table),
    # Running experiments
    "python -m fastff.train": run_tiny(*TRAIN, check=summary_table),
    "python -m fastff.train layer=moe layer.k=1": run_tiny(*TRAIN),
    "python -m fastff.train layer.width=128 layer.leaf_width=8 layer.region_leak=0.1": run_tiny(
        *TRAIN
    ),
    "python -m fastff.train data=mnist layer.width=128 layer.leaf_width=8": one_line(
        "error: dataset 'mnist' not found in ", check=no_data_folder()
    ),
    "python -m fastff.train experiment=table1 data=usps layer=ff": one_line(
        "error: dataset 'usps' not found in ", check=no_data_folder()
    ),
    "python -m fastff.train trainer=gpu trainer.precision=bf16-mixed": cuda_or(
        run_tiny(*TRAIN), one_line("error: trainer", check=contains("trainer=cpu"))
    ),
    "python -m fastff.train --multirun layer.leaf_width=1,2,4,8 seed=0,1,2": run_tiny(
        *FEW, quiet=False
    ),
    # Vision transformers
    "python -m fastff.train model=vit": run_tiny(*FEW),
    "python -m fastff.train experiment=table3_mnist5k layer=fff layer.leaf_width=8": run_tiny(*FEW),
    "python -m fastff.train experiment=table3 layer=fff layer.leaf_width=1": one_line(
        "error: dataset 'cifar10' not found in ", check=no_data_folder()
    ),
    "python -m fastff.train model=vit model.arch=vit_tiny_patch16_224 model.patch_size=4 "
    "layer.leaf_width=24": run_tiny(*FEW),
    # The protocol and the results
    "python -m fastff.eval ckpt_path=outputs/train/runs/<date_time>/checkpoints/last.ckpt": Plan(
        check=eval_json_where_the_readme_says, quiet=True
    ),
    # Weights & Biases: uploading needs a server; the folders it names exist
    "wandb sync outputs/train/runs/<date_time>/wandb/offline-run-*": Plan(
        help=("wandb sync",), check=wandb_sync
    ),
    # Sweeps (table1_digits: the real grid, one epoch per trial)
    'make sweep SWEEP=sweeps/table1_digits.yaml ARGS="--jobs 2"': Plan(
        extra=("--max-trials", "2"), check=contains("0001", "0002")
    ),
    "python -m fastff.sweep sweeps/table1_digits.yaml --dry-run": Plan(check=contains("Estimate")),
    "python -m fastff.sweep sweeps/table1.yaml --online": ONLINE,
    "python -m fastff.sweep sweeps/table1.yaml --sweep-id ENTITY/PROJECT/ID": ONLINE,
    "wandb sweep sweeps/table1.yaml && wandb agent ENTITY/PROJECT/ID": Plan(
        help=("wandb sweep", "wandb agent")
    ),
    "wandb agent ENTITY/PROJECT/ID": Plan(help=("wandb agent",)),
    # Report (sources: the committed results, copied into outputs/)
    "python -m fastff.report outputs/sweeps/table1_digits": Plan(
        check=report_written("outputs/report")
    ),
    "python -m fastff.report outputs/sweeps/table1_mnist5k outputs/bench -o outputs/report": Plan(
        check=report_written("outputs/report")
    ),
    'make report ARGS="outputs/sweeps/table3_mnist5k outputs/bench --table table3"': Plan(
        check=report_written("outputs/report")
    ),
    "python -m fastff.report --wandb ENTITY/fastff --sweep SWEEP_ID": one_line(
        "error: --wandb: ", check=contains("wandb login")
    ),
    "python -m fastff.report outputs/report/runs.csv outputs/report/bench.csv -o "
    "outputs/report2": Plan(check=report_written("outputs/report2")),
    # Clusters
    "python -m fastff.train trainer=ddp trainer.devices=4": (
        NEEDS_4_GPUS if HAS_CUDA else DDP_WITHOUT_GPU
    ),
    "python -m fastff.train trainer=ddp trainer.devices=4 trainer.num_nodes=2": (
        NEEDS_4_GPUS if HAS_CUDA else DDP_WITHOUT_GPU
    ),
    "python -m fastff.train trainer=ddp_cpu": run_tiny(*FEW, check=summary_table),
    "python -m fastff.train --multirun hydra/launcher=slurm hydra.launcher.partition=gpu "
    "hydra.launcher.timeout_min=600 trainer=ddp trainer.devices=4 data=mnist layer.width=128 "
    "layer.leaf_width=1,2,4,8 seed=0,1,2": (
        Plan(skip="would submit SLURM jobs")
        if HAS_SLURM
        else one_line("error: hydra/launcher=slurm: this machine has no SLURM")
    ),
    # Speed benchmark (one or two sizes, one timing round)
    "make bench": run_tiny(*FIG3, check=bench_table, quiet=False),
    'make bench ARGS="mode=table1"': run_tiny(*TABLE1, check=bench_table, quiet=False),
    'make bench ARGS="mode=train"': run_tiny(*STEP, check=bench_table, quiet=False),
    "python -m fastff.bench mode=paper_fig3 'modes.paper_fig3.batch_sizes=[1,256]' "
    "modes.paper_fig3.max_depth=11": run_tiny(*FIG3, check=bench_table, quiet=False),
    "python -m fastff.bench mode=table1 dtype=bfloat16 threads=1 wandb.mode=disabled": run_tiny(
        *TABLE1, check=bench_table, quiet=False
    ),
    "python -m fastff.bench mode=paper_fig3 'extra_fff_strategies=[plain,grouped]'": run_tiny(
        *FIG3, check=bench_table, quiet=False
    ),
    "python -m fastff.bench mode=train 'implementations=[ff,fff]' "
    "'extra_soft_implementations=[fused_torch,composite]'": run_tiny(
        *STEP, check=bench_table, quiet=False
    ),
    "python -m fastff.bench mode=train_vit 'implementations=[ff,fff]' "
    "'extra_soft_implementations=[fused_torch,composite]'": run_tiny(
        *STEP_VIT, check=bench_table, quiet=False
    ),
    # GPU
    "make gpu-wheels": Plan(recipe="pip download"),  # needs a package index
    "make gpu-check": GPU_CHECK,
    "GPU_CHECK_DRY_RUN=1 make gpu-check PYTHON=.venv/bin/python": DRY_GPU_CHECK,
    # Export and serve
    "python -m fastff.export ckpt_path=outputs/train/runs/<date_time>/checkpoints/last.ckpt "
    "format=onnx output=model.onnx": Plan(check=exported("model.onnx"), quiet=True),
    "python -m fastff.export ckpt_path=... format=torch_export output=model.pt2": Plan(
        check=exported("model.pt2"), quiet=True
    ),
    'make export ARGS="ckpt_path=... format=onnx output=model.onnx test=true"': Plan(
        check=contains("test accuracy of the exported model")
    ),
    # Datasets (no network: each fetch fails in one line and leaves no folder)
    "make data": Plan(status=1, check=fetch_failed),
    'make data ARGS="--datasets mnist usps"': Plan(status=1, check=fetch_failed),
    "python -m fastff.data.fetch --datasets cifar10 --data-dir /datasets": Plan(
        status=1, check=fetch_failed
    ),
    # Development
    "make test-fast": Plan(recipe='-m pytest -m "not slow"'),
    "make lint": Plan(check=lint_clean),
}

QUICK_BLOCKS = {"the-layers"}
"""Blocks that run in make test-fast; the others start processes that train, benchmark or sweep."""


# -- the scratch folder and what commands need in it -----------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The scratch folder every command runs in, laid out as the project root."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("src", "tests", "tools", "pyproject.toml"):
        (work / name).symlink_to(ROOT / name)
    venv = ROOT / ".venv" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.prefix)
    (work / ".venv").symlink_to(venv)
    sweeps = work / "sweeps"
    sweeps.mkdir()
    for path in (ROOT / "sweeps").iterdir():
        (sweeps / path.name).symlink_to(path)
    # The real grid of sweeps/table1_digits.yaml, one epoch per trial.
    (sweeps / "table1_digits.yaml").unlink()
    spec = yaml.safe_load((ROOT / "sweeps" / "table1_digits.yaml").read_text())
    spec["parameters"]["trainer.max_epochs"] = {"value": 1}
    spec["parameters"]["logger"] = {"value": "none"}
    (sweeps / "table1_digits.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (work / "home").mkdir()
    return work


def environment(work: Path) -> dict[str, str]:
    drop = ("WANDB_", "FASTFF_", "PROJECT_ROOT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    offline = Path(__file__).parent / "offline"
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in [str(offline), env.get("PYTHONPATH")] if p),
        HOME=str(work / "home"),  # no stored W&B login
        NETRC="",
        WANDB_CONFIG_DIR=str(work / "home" / ".config" / "wandb"),
        TORCH_EXTENSIONS_DIR=str(extensions_root()),  # the C++ kernel already built
        README_TEST_PYTHON=sys.executable,
        COLUMNS="100",
    )
    return env


def shell(script: str, work: Path, timeout: float = 900) -> Result:
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=work,
        env=environment(work),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ensure_checkpoint(work: Path) -> None:
    """A trained digits run at outputs/train/runs/<date_time>/ (W&B offline, as by default)."""
    if not (work / CHECKPOINT).is_file():
        run_dir = work / "outputs" / "train" / "runs" / RUN_NAME
        result = shell(f"python -m fastff.train trainer.max_epochs=3 hydra.run.dir={run_dir}", work)
        assert result.returncode == 0, result.stderr[-3000:]


def ensure_exported(work: Path) -> None:
    """model.onnx and model.pt2 in the scratch folder, as the export block writes them."""
    ensure_checkpoint(work)
    for fmt, name in (("onnx", "model.onnx"), ("torch_export", "model.pt2")):
        if not (work / name).is_file():
            script = f"python -m fastff.export ckpt_path={CHECKPOINT} format={fmt} output={name}"
            result = shell(script, work)
            assert result.returncode == 0, result.stderr[-3000:]


def ensure_report_sources(work: Path) -> None:
    """The committed sweep, run and benchmark results as the report block's sources."""
    results = ROOT / "docs" / "results"
    sources = {
        "outputs/sweeps/table1_digits": results / "sweeps" / "table1_digits",
        "outputs/sweeps/table1_mnist5k": results / "sweeps" / "table1_mnist5k",
        "outputs/sweeps/table3_mnist5k": results / "runs" / "table3_mnist5k",
        "outputs/bench": results / "bench",
    }
    for target, source in sources.items():
        if not (work / target).exists():
            ignore = shutil.ignore_patterns("*.png", "wandb", "checkpoints")
            shutil.copytree(source, work / target, ignore=ignore)


def substitute(command: str, work: Path) -> str:
    """The README's placeholders filled in: the trained run, a scratch data folder."""
    command = command.replace("<date_time>", RUN_NAME)
    command = re.sub(r"ckpt_path=\.\.\.(?=[\s\"']|$)", f"ckpt_path={CHECKPOINT}", command)
    return command.replace("--data-dir /datasets", f"--data-dir {work / 'datasets'}")


def prepare(command: str, work: Path) -> None:
    if "<date_time>" in command or "ckpt_path=..." in command:
        ensure_checkpoint(work)
    if "fastff.report" in command or "make report" in command:
        ensure_report_sources(work)


def is_make(command: str) -> bool:
    """Whether ``command`` is a ``make`` line (maybe after ``VAR=value`` assignments)."""
    words = shlex.split(command)
    return "make" in words and all("=" in w for w in words[: words.index("make")])


def run_command(command: str, plan: Plan, work: Path, prelude: str) -> None:
    """Run one README command by its plan and check the result."""
    if plan.skip:
        return
    prepare(command, work)
    text = substitute(command, work)
    env = environment(work)
    if plan.recipe is not None:
        script = make_script(text, (), env)
        assert plan.recipe in script, script
        return
    if plan.help:
        for program in plan.help:
            result = shell(f"{program} --help", work)
            assert result.returncode == 0, (program, result.stderr[-2000:])
        if plan.check:
            plan.check(result, work)
        return
    if is_make(text):
        script = make_script(text, plan.extra, env)
    else:
        script = " ".join([text, *map(shlex.quote, plan.extra)])
    result = shell("\n".join([prelude, script]), work)
    context = f"{command}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == plan.status, context
    if plan.line is not None:
        assert len(result.lines) == 1, context
        assert result.lines[0].startswith(plan.line), context
    if plan.quiet:
        foreign = [
            line
            for line in result.stderr.splitlines()
            if line.strip() and not line.startswith(FASTFF_PREFIXES)
        ]
        assert foreign == [], context
    if plan.check:
        plan.check(result, work)


def run_python(block: Block, work: Path) -> None:
    """Run a python block as a script in the scratch folder."""
    if "<date_time>" in block.text:
        ensure_checkpoint(work)
    if "model.onnx" in block.text or "model.pt2" in block.text:
        ensure_exported(work)
    script = work / f"readme_{block.name}.py"
    script.write_text(block.text.replace("<date_time>", RUN_NAME))
    result = shell(f"python {shlex.quote(str(script))}", work)
    assert result.returncode == 0, f"{block.text}\n--- stderr\n{result.stderr[-3000:]}"


# -- the tests -------------------------------------------------------------------------------------

BLOCKS = readme_blocks()


def _marks(block: Block) -> list:
    slow = block.name.split("-", 1)[1] not in QUICK_BLOCKS
    return [pytest.mark.slow] if slow else []


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("block", [pytest.param(b, id=b.name, marks=_marks(b)) for b in BLOCKS])
def test_readme_block_runs_as_documented(block: Block, work: Path):
    if block.lang == "python":
        run_python(block, work)
        return
    prelude = ""
    for command in block.commands:
        if command.startswith("source "):
            activate = work / command.split()[1]
            prelude = command if activate.is_file() else ""
            continue
        run_command(command, PLANS[command], work, prelude)


def test_every_command_has_a_plan():
    commands = {c for block in BLOCKS if block.lang == "bash" for c in block.commands}
    assert sorted(commands - set(PLANS)) == [], "README commands the test does not know"
    assert sorted(set(PLANS) - commands) == [], "plans of commands the README no longer has"


def test_readme_lists_every_make_target():
    phony = re.search(r"^\.PHONY: (.+)$", (ROOT / "Makefile").read_text(), re.M)
    targets = set(phony.group(1).split()) - {"help"}  # `make help` is what lists them
    listed = README.read_text().split("`make help` lists every target:")[1].split(". ")[0]
    assert set(re.findall(r"`([a-z-]+)`", listed)) == targets


def test_readme_names_existing_source_paths():
    """Every ``src/...``, ``tests/...``, ``conf/...``, ``tools/...`` or ``sweeps/...`` path the
    README names exists."""
    text = README.read_text()
    paths = set(re.findall(r"`((?:src|tests|conf|tools|sweeps)/[\w./-]+)`", text))
    missing = [p for p in sorted(paths) if "<" not in p and not (ROOT / p).exists()]
    assert missing == []
