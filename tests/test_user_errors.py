"""Every user mistake, through the real command lines: status 2 within 30 s, exactly one
``error: ...`` line on stderr naming the setting, and no Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crafted_checkpoints import FOREIGN_MESSAGES

# Each test runs the real command line (a few seconds each): the first case of each entry point
# runs in `make test-fast`; the other cases and the tests below are marked slow.

NO_GPU = "" if torch.cuda.is_available() else "no GPU"
TRAIN = ("fastff.train", "logger=none")

# (command line, what the error line must contain); {file} is a plain file, {dir} a folder
CASES: list[tuple[tuple[str, ...], str]] = [
    # training: settings
    ((*TRAIN, "seed=-1"), "error: seed must be an integer from 0 to 4294967295"),
    ((*TRAIN, "seed=4294967296"), "error: seed must be an integer from 0"),
    ((*TRAIN, "seed=abc"), "error: seed must be an integer"),
    ((*TRAIN, "layer.depth=40", "layer.width=null"), "error: layer.depth=40: the layer"),
    ((*TRAIN, "layer=ff", "layer.width=1099511627776"), "error: layer.width=1099511627776"),
    ((*TRAIN, "optimizer.lr=-1"), "error: optimizer.lr"),
    ((*TRAIN, "optimizer.lr=nan"), "error: optimizer.lr"),
    ((*TRAIN, "data.batch_size=0"), "error: data.batch_size"),
    ((*TRAIN, "trainer.max_epochs=0"), "error: trainer.max_epochs"),
    ((*TRAIN, "layer.leaf_width=0"), "error: layer.leaf_width"),
    ((*TRAIN, "layer.width=48"), "error: layer.width=48"),
    (("fastff.train", "logger.wandb.mode=cloud"), "error: logger.wandb.mode"),
    ((*TRAIN, "callbacks.early_stopping.patience=0"), "error: callbacks.early_stopping.patience"),
    ((*TRAIN, "ckpt_path=missing.ckpt"), "error: ckpt_path"),
    ((*TRAIN, "ckpt_path={file}"), "error: ckpt_path"),
    # training: output folders
    ((*TRAIN, "hydra.run.dir={file}/x"), "error: hydra.run.dir: cannot create"),
    ((*TRAIN, "paths.log_dir={file}"), "error: hydra.run.dir: cannot create"),
    ((*TRAIN, "paths.output_dir={file}/y"), "error: paths.output_dir: cannot create"),
    ((*TRAIN, "hydra.run.dir=/proc/x/run"), "error: hydra.run.dir: cannot create"),
    # training: what Hydra meets composing the config
    (
        (*TRAIN, "data=nonexistent"),
        "error: data=nonexistent: there is no 'nonexistent' in conf/data/. Available options in "
        "'data': cifar10, cifar100, digits, fashion_mnist, mnist, mnist5k, svhn, usps",
    ),
    ((*TRAIN, "layer.width=$(touch x)"), "error: layer.width=$(touch x): Hydra cannot parse"),
    # evaluation
    (("fastff.eval",), "error: ckpt_path is required"),
    (("fastff.eval", "ckpt_path=missing.ckpt"), "error: ckpt_path"),
    (("fastff.eval", "ckpt_path={file}"), "error: ckpt_path"),
    (("fastff.eval", "ckpt_path={dir}"), "error: ckpt_path"),
    (("fastff.eval", "ckpt_path=x.ckpt", "hydra.run.dir={file}/x"), "error: hydra.run.dir"),
    (("fastff.eval", "ckpt_path=x.ckpt", "hydra.run.dir=/proc/x/run"), "error: hydra.run.dir"),
    # benchmark
    (("fastff.bench", "mode=table1", "modes.table1.widths=[0]"), "error: modes.table1.widths"),
    (
        ("fastff.bench", "mode=table1", "modes.table1.batch_sizes=[-1]"),
        "error: modes.table1.batch_sizes",
    ),
    (
        ("fastff.bench", "mode=table1", "modes.table1.leaf_widths=[0]"),
        "error: modes.table1.leaf_widths",
    ),
    (("fastff.bench", "mode=table1", "modes.table1.widths=[24]"), "error: modes.table1.widths"),
    (
        ("fastff.bench", "modes.paper_fig3.min_depth=5", "modes.paper_fig3.max_depth=2"),
        "error: modes.paper_fig3.min_depth=5 must be <=",
    ),
    (("fastff.bench", "timing.warmup=-1"), "error: timing.warmup"),
    (("fastff.bench", "check.oracle_rows=-1"), "error: check.oracle_rows"),
    (("fastff.bench", "wandb.mode=cloud"), "error: wandb.mode must be one of"),
    (("fastff.bench", "seed=-1"), "error: seed must be an integer from 0"),
    (("fastff.bench", "threads=0"), "error: threads"),
    (("fastff.bench", "hydra.run.dir={file}/x"), "error: hydra.run.dir: cannot create"),
    (("fastff.bench", "hydra.run.dir=/proc/x/run"), "error: hydra.run.dir: cannot create"),
    # export
    (("fastff.export", "ckpt_path=missing.ckpt"), "error: ckpt_path: no checkpoint file"),
    (("fastff.export", "ckpt_path={file}"), "error: ckpt_path"),
    (("fastff.export", "ckpt_path=x.ckpt", "hydra.run.dir=/proc/x/run"), "error: hydra.run.dir"),
    # sweep runner
    (("fastff.sweep", "missing.yaml"), "error: sweep file missing.yaml not found"),
    (("fastff.sweep", "{bad_yaml}"), "is not valid YAML"),
    (("fastff.sweep", "{list_yaml}"), "must hold a mapping"),
    (("fastff.sweep", "{sweep}", "--dry-run", "--jobs", "0"), "error: --jobs must be at least 1"),
    (("fastff.sweep", "{sweep}", "--threads", "0"), "error: --threads must be at least 1"),
    (("fastff.sweep", "{sweep}", "-o", "/proc/x/sw"), "error: -o/--output-dir /proc/x/sw: cannot"),
    (("fastff.sweep", "{sweep}", "-o", "{file}"), "cannot create it (a file is in the way)"),
]
GPU_CASES = [
    ((*TRAIN, "trainer=gpu"), "error: trainer"),
    ((*TRAIN, "trainer.accelerator=gpu"), "error: trainer"),
]


def _ids(cases):
    return [" ".join(args[1:]) or args[0] for args, _ in cases]


def _run(tmp_path: Path, args: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, float]:
    files = {
        "file": tmp_path / "a_file",
        "dir": tmp_path / "a_dir",
        "bad_yaml": tmp_path / "bad.yaml",
        "list_yaml": tmp_path / "list.yaml",
        "sweep": tmp_path / "fake.yaml",
    }
    files["file"].write_text("not a checkpoint\n")
    files["dir"].mkdir()
    files["bad_yaml"].write_text("parameters: [\n")
    files["list_yaml"].write_text("- a\n- b\n")
    files["sweep"].write_text(  # a trial of it would fail: fake_trial is not on the path here
        "name: fake\nmethod: grid\nparameters:\n  x: {values: [1]}\n"
        'command: ["${env}", "${interpreter}", -m, fake_trial, "${args_no_hyphens}"]\n'
    )
    args = tuple(a.format(**{k: str(v) for k, v in files.items()}) for a in args)
    if args[0] != "fastff.sweep" and not any(
        a.startswith(("hydra.run.dir", "paths.")) for a in args
    ):
        args = (*args, f"hydra.run.dir={tmp_path / 'run'}")
    env = {**os.environ, "WANDB_MODE": "", "FASTFF_DATA_DIR": str(tmp_path / "data")}
    env.pop("WANDB_MODE")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return proc, time.monotonic() - start


def _check(proc: subprocess.CompletedProcess, seconds: float, expected: str) -> None:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == 2, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert expected in errors[0], errors[0]
    assert seconds < 30, f"took {seconds:.0f} s"


def _first_per_entry_point_fast(cases):
    seen: set[str] = set()
    marked = []
    for args, expected in cases:
        marks = () if args[0] not in seen else (pytest.mark.slow,)
        seen.add(args[0])
        marked.append(pytest.param(args, expected, marks=marks))
    return marked


@pytest.mark.parametrize(("args", "expected"), _first_per_entry_point_fast(CASES), ids=_ids(CASES))
def test_user_error_is_one_line_and_status_2(tmp_path, args, expected):
    _check(*_run(tmp_path, args), expected)


@pytest.mark.skipif(not NO_GPU, reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize(("args", "expected"), GPU_CASES, ids=_ids(GPU_CASES))
def test_gpu_on_a_machine_without_one_is_one_line(tmp_path, args, expected):
    _check(*_run(tmp_path, args), expected)


# ------------------------------------------------------------------ received checkpoints (issue 18)
def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a refused command (status 2, no traceback)."""
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == 2, output[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return line


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A genuine fastff checkpoint dict (digits, FFF), built without training."""
    from crafted_checkpoints import fastff_checkpoint

    return fastff_checkpoint(tmp_path_factory.mktemp("crafted"))


FOREIGN_CLI = [
    (module, case, key)
    for module in ("fastff.eval", "fastff.export", "fastff.train")
    for case, key in FOREIGN_MESSAGES.items()
]


@pytest.mark.slow
@pytest.mark.parametrize(("module", "case", "expected"), FOREIGN_CLI)
def test_a_checkpoint_naming_foreign_code_is_refused(crafted, tmp_path, module, case, expected):
    """eval, export and train ckpt_path= refuse a recorded config naming anything but fastff's
    builders before importing it: one line naming key and value, status 2, no file written."""
    from crafted_checkpoints import foreign_changes, write_variant

    marker = tmp_path / "marker"
    ckpt = write_variant(crafted, tmp_path / "foreign.ckpt", foreign_changes(marker)[case])
    extra = ("logger=none",) if module == "fastff.train" else ()
    proc = _cli(tmp_path, module, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'r'}", *extra)
    line = _error_line(proc)
    assert line.startswith("error: ckpt_path: ") and expected in line, line
    assert "refused before importing anything" in line
    assert not marker.exists()
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("module", ["fastff.eval", "fastff.export", "fastff.train"])
def test_a_checkpoint_with_wrong_shaped_tensors_is_one_line(crafted, tmp_path, module):
    from crafted_checkpoints import write_variant

    expected = tuple(crafted["state_dict"]["model.layer.w1s"].shape)

    def shrink(c):
        c["state_dict"]["model.layer.w1s"] = torch.zeros(3, 5)

    ckpt = write_variant(crafted, tmp_path / "shape.ckpt", shrink)
    before = ckpt.read_bytes()
    extra = ("logger=none",) if module == "fastff.train" else ()
    proc = _cli(tmp_path, module, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'r'}", *extra)
    line = _error_line(proc)
    assert (
        f"error: ckpt_path: the checkpoint's tensor model.layer.w1s has shape (3, 5), but the "
        f"model built from the config needs {expected}"
    ) in line, line
    assert ckpt.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("module", ["fastff.eval", "fastff.export"])
def test_a_checkpoint_whose_state_dict_is_no_mapping_is_one_line(crafted, tmp_path, module):
    from crafted_checkpoints import write_variant

    ckpt = write_variant(crafted, tmp_path / "odd.ckpt", lambda c: c.__setitem__("state_dict", 5))
    line = _error_line(_cli(tmp_path, module, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/r"))
    assert line == f"error: ckpt_path: {str(ckpt)!r} is not a checkpoint written by fastff.train"


@pytest.mark.slow
def test_resuming_from_a_weights_only_checkpoint_is_one_line(crafted, tmp_path):
    """A checkpoint with fitting weights but no training state (as fastff.quantization or a
    hand-made file writes) cannot be resumed: one line, before any training."""
    from crafted_checkpoints import write_variant

    ckpt = write_variant(crafted, tmp_path / "weights.ckpt", lambda c: None)
    run_dir = tmp_path / "r"
    proc = _cli(
        tmp_path, "fastff.train", "logger=none", f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir}"
    )
    line = _error_line(proc)
    assert line.startswith(
        f"error: ckpt_path: {str(ckpt)!r} holds weights only (no pytorch-lightning_version)"
    ), line
    assert not (run_dir / "checkpoints").exists()


EXPORT_OUTPUTS = [
    ("/proc/x/model.onnx", "cannot write there: cannot create a folder in '/proc'"),
    ("{tmp}", "is a folder; give the file to write"),
    ("{ckpt}", "is the checkpoint itself, which the export would overwrite"),
    ("{ckpt}/model.onnx", "is a file, not a folder"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("output", "expected"), EXPORT_OUTPUTS)
def test_an_export_output_that_cannot_be_written_is_one_line(crafted, tmp_path, output, expected):
    """Refused before any work: nothing written, the checkpoint unchanged."""
    from crafted_checkpoints import write_variant

    ckpt = write_variant(crafted, tmp_path / "ok.ckpt", lambda c: None)
    before = ckpt.read_bytes()
    output = output.format(tmp=tmp_path, ckpt=ckpt)
    proc = _cli(
        tmp_path,
        "fastff.export",
        f"ckpt_path={ckpt}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    line = _error_line(proc)
    assert line.startswith(f"error: output={output}: ") and expected in line, line
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.ckpt", "r"]
    assert not (tmp_path / "r" / "export.json").exists()


# ---------------------------------------------------------------------- received sweep states
def _sweep_with_state(tmp_path: Path, trials: list[dict], parameters: str = "x: {values: [1]}"):
    """A sweep file of stand-in trials and its state.json under tmp_path/out/fake/."""
    import json

    from fastff.sweep import load_spec
    from fastff.sweep.state import SweepState, Trial

    path = tmp_path / "fake.yaml"
    path.write_text(
        "name: fake\nmethod: grid\nmetric: {name: score, goal: maximize}\n"
        f"parameters:\n  {parameters}\n"
        'command: ["${env}", "${interpreter}", -m, fake_trial, "${args_no_hyphens}"]\n'
    )
    spec = load_spec(path)
    state = SweepState("fake", str(path), spec.fingerprint, "grid", spec.config["metric"])
    state.trials = [Trial(**t) for t in trials]
    state_path = tmp_path / "out" / "fake" / "state.json"
    state.save(state_path)
    return path, state_path, json.loads(state_path.read_text())


def _sweep_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "sweep")}
    return subprocess.run(
        [sys.executable, "-m", "fastff.sweep", *args, "-o", str(tmp_path / "out")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_state_whose_run_dir_is_outside_the_sweep_deletes_nothing(tmp_path, dry_run):
    home = tmp_path / "home"
    home.mkdir()
    (home / "marker.txt").write_text("keep me")
    trial = {"id": "0001", "params": {"x": 1}, "run_dir": str(home), "status": "running"}
    path, _, _ = _sweep_with_state(tmp_path, [trial])
    proc = _sweep_cli(tmp_path, str(path), *(["--dry-run"] if dry_run else []))
    line = _error_line(proc)
    assert f"trial 0001 has run_dir={str(home)!r}" in line and "nothing was deleted" in line
    assert (home / "marker.txt").read_text() == "keep me"


@pytest.mark.slow
def test_a_state_with_a_foreign_target_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    payload = "{_target_:numpy.savetxt,fname:'" + str(marker) + "',X:[1.0]}"
    trial = {
        "id": "0001",
        "params": {"act": payload},
        "run_dir": str((tmp_path / "out" / "fake" / "trials" / "0001").resolve()),
    }
    path, _, _ = _sweep_with_state(tmp_path, [trial], "act: {values: [relu]}")
    line = _error_line(_sweep_cli(tmp_path, str(path)))
    assert "trial 0001: act._target_='numpy.savetxt' is not one of fastff's builders" in line
    assert not marker.exists() and not (tmp_path / "out" / "fake" / "trials").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "empty", "wrong_types"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_an_unreadable_sweep_state_is_one_line(tmp_path, damage, dry_run):
    import json

    trial = {"id": "0001", "params": {"x": 1}, "run_dir": "", "status": "finished"}
    path, state_path, data = _sweep_with_state(tmp_path, [trial])
    text = state_path.read_text()
    if damage == "truncated":
        state_path.write_text(text[: len(text) // 2])
    elif damage == "empty":
        state_path.write_text("")
    else:
        data["trials"][0]["params"] = ["x", 1]
        state_path.write_text(json.dumps(data))
    broken = state_path.read_bytes()
    line = _error_line(_sweep_cli(tmp_path, str(path), *(["--dry-run"] if dry_run else [])))
    assert f"error: the sweep state {state_path} is unreadable (" in line
    assert "run with --new to start over" in line
    assert state_path.read_bytes() == broken


@pytest.mark.slow
def test_a_trial_failing_at_config_parsing_records_the_real_reason(tmp_path):
    import json

    path = tmp_path / "parse.yaml"
    path.write_text(
        "name: parse\nmethod: grid\nmetric: {name: G_A, goal: maximize}\n"
        "parameters:\n  layer.width: {values: ['$(touch marker)']}\n  logger: {value: none}\n"
        'command: ["${env}", "${interpreter}", -m, fastff.train, "${args_no_hyphens}"]\n'
    )
    proc = _sweep_cli(tmp_path, str(path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    (trial,) = json.loads((tmp_path / "out" / "parse" / "state.json").read_text())["trials"]
    assert trial["status"] == "failed" and trial["exit_code"] == 2
    assert trial["error"].startswith(
        "error: layer.width=$(touch marker): Hydra cannot parse this override (mismatched input"
    ), trial["error"]
    assert not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------- a disk that fills up
def _train_on_a_filling_disk(tmp_path: Path, spec: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``fastff.train`` for 3 epochs with tests/fault_injection/sitecustomize.py making writes
    fail with ENOSPC as ``spec`` says (``ckpt:N`` / ``metrics:N``)."""
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "FASTFF_FULL_DISK": spec,
        "PYTHONPATH": str(Path(__file__).parent / "fault_injection"),
        "TMPDIR": str(tmp_path),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastff.train",
            "logger=none",
            "trainer.max_epochs=3",
            "callbacks.rich_progress_bar=null",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return proc, run_dir


def _one_error_line(proc: subprocess.CompletedProcess, status: int) -> str:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == status, output[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.slow
def test_a_checkpoint_write_on_a_full_disk_fails_the_run_and_keeps_the_last(tmp_path):
    """The first epoch's two checkpoints (best, last) are written; the second epoch's write
    fails halfway: status failed with the reason, exit 1, the first epoch's last.ckpt intact."""
    import json

    from fastff.training.checkpoint import load_model, read_checkpoint

    proc, run_dir = _train_on_a_filling_disk(tmp_path, "ckpt:2")
    line = _one_error_line(proc, 1)
    assert line.startswith("error: the run stopped: OSError: No space left on device;"), line
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left on device" in metrics["error"]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["epoch"] == 0
    load_model(last)  # complete: it loads
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best-epoch000.ckpt",
        "last.ckpt",
    ]


@pytest.mark.slow
def test_a_metrics_write_on_a_full_disk_fails_the_run_and_keeps_the_previous(tmp_path):
    """metrics.json written at the start; the final write fails halfway: exit 1 with one line
    naming the fallback file, which holds the results with status failed; metrics.json is the
    start's, whole."""
    import json

    proc, run_dir = _train_on_a_filling_disk(tmp_path, "metrics:1")
    line = _one_error_line(proc, 1)
    assert line.startswith(f"error: cannot write {run_dir / 'metrics.json'} (No space left"), line
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"
    fallback = Path(line.split(" are in ", 1)[1].split(";", 1)[0])
    saved = json.loads(fallback.read_text())
    assert saved["status"] == "failed" and saved["G_A"] is not None
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".metrics.json.")]


@pytest.mark.slow
def test_dry_run_lists_every_trial_that_would_fail(tmp_path):
    path = tmp_path / "widths.yaml"
    path.write_text(
        "name: widths\nmethod: grid\nmetric: {name: G_A, goal: maximize}\n"
        "parameters:\n  layer.width: {values: [-5, 48, 'abc', 64]}\n  logger: {value: none}\n"
        'command: ["${env}", "${interpreter}", -m, fastff.train, "${args_no_hyphens}"]\n'
    )
    proc = _sweep_cli(tmp_path, str(path), "--dry-run")
    output = " ".join((proc.stdout + proc.stderr).split())
    assert "Traceback" not in output
    assert proc.returncode == 1, output[-3000:]
    assert "3 of the 4 trials to run would fail:" in output
    for trial, value in (("0001", "-5"), ("0002", "48"), ("0003", "abc")):
        assert f"trial {trial}: error: layer.width" in output and value in output
    assert "trial 0004: error" not in output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resume_adopts_a_trial_that_finished_unrecorded(tmp_path):
    import json

    path = tmp_path / "fake.yaml"
    path.write_text(
        "name: fake\nmethod: grid\nmetric: {name: score, goal: maximize}\n"
        "parameters:\n  x: {values: [1, 2]}\n  hydra: {value: true}\n"
        'command: ["${env}", "${interpreter}", -m, fake_trial, "${args_no_hyphens}"]\n'
    )
    assert _sweep_cli(tmp_path, str(path)).returncode == 0
    state_path = tmp_path / "out" / "fake" / "state.json"
    state = json.loads(state_path.read_text())
    state["trials"][1].update(status="running", metric=None)  # killed before it was recorded
    state_path.write_text(json.dumps(state))
    run_dir = Path(state["trials"][1]["run_dir"])
    before = (run_dir / "metrics.json").read_text()
    proc = _sweep_cli(tmp_path, str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 finished result(s) adopted" in " ".join(proc.stdout.split())
    trial = json.loads(state_path.read_text())["trials"][1]
    assert trial["status"] == "finished" and trial["attempts"] == 1 and trial["metric"] == -1.0
    assert (run_dir / "metrics.json").read_text() == before
