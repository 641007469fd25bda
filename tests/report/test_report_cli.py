"""The report's command line: bad input is one line on stderr and exit status 2 (never a
traceback), W&B runs through a fake ``wandb.Api``, the W&B artifact offline, a light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from make_recipes import make_commands, run_make
from report_helpers import run_metrics, write_run

ROOT = Path(__file__).resolve().parents[2]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nowhere"], "does not exist; give run folders"),
        (["{empty}"], "no runs or benchmark results found in"),
        (["{handmade}", "--table", "table2", "--sweep", "abc"], "--sweep needs --wandb"),
        (["--wandb", "just-a-project"], "--wandb just-a-project: give ENTITY/PROJECT"),
        (["{handmade}", "--table", "table9"], "argument --table: invalid choice"),
        (["{handmade}", "--wandb-mode", "cloud"], "argument --wandb-mode: invalid choice"),
        (["{csv}"], "is neither a runs.csv"),
        (["{handmade}", "-o", "{csv}"], "is a file; give a folder"),
        (["{table1_only}", "--table", "table2"], "--table table2: no finished runs of table2"),
        (["{handmade}/t1/ff_w16_s0/metrics.json", "--table", "speed"], "--table speed needs"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args, message, handmade, report_main, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    csv = tmp_path / "other.csv"
    csv.write_text("a,b\n1,2\n")
    table1_only = tmp_path / "t1only"
    write_run(
        table1_only / "r", dataset="usps", tags=("table1",), layer="ff", width=16, seed=0,
        M_A=1.0, G_A=1.0,
    )  # fmt: skip
    names = {"tmp": tmp_path, "empty": empty, "csv": csv, "handmade": handmade}
    names["table1_only"] = table1_only
    argv = [a.format(**names) for a in args]
    try:
        status = report_main(*argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert message in _one_error_line(capsys)


def test_mixed_experiments_in_the_table_asked_for(handmade, report_main, capsys):
    write_run(
        handmade / "other" / "ff_w16", dataset="usps", tags=("table1",), task_name="table1_v2",
        layer="ff", width=16, seed=0, M_A=1.0, G_A=1.0,
    )  # fmt: skip
    assert report_main(handmade, "--table", "table1", "-o", handmade.parent / "out") == 2
    line = _one_error_line(capsys)
    assert "--table table1: table1 on usps mixes 2 experiments" in line
    assert "task_name 'table1'" in line and "task_name 'table1_v2'" in line
    assert "give one experiment's run folders" in line


def test_the_real_command_line_fails_cleanly(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastff.report",
            str(tmp_path / "missing"),
            "--wandb-mode",
            "disabled",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: source {tmp_path / 'missing'} does not exist; give run folders (metrics.json "
        "inside, searched recursively), benchmark folders (bench_<mode>.csv), a report's runs.csv "
        "or bench.csv, or --wandb ENTITY/PROJECT"
    ]


def test_importing_the_report_loads_neither_torch_nor_matplotlib():
    code = (
        "import sys, fastff.report, fastff.report.cli, fastff.report.collect, "
        "fastff.report.tables; print(sorted(m for m in ('torch', 'matplotlib', 'wandb') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_make_report_target():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "make report " in out
    assert make_commands("report", ARGS="runs -o out") == [
        [".venv/bin/python", "-m", "fastff.report", "runs", "-o", "out"]
    ]
    done = run_make("report", python=sys.executable, ARGS="--help")  # the target itself
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: fastff-report")


# ------------------------------------------------------------------------------------ W&B API
class FakeRun:
    """What the report reads of a ``wandb.apis.public.Run``."""

    def __init__(self, run_id: str, state: str, metrics: dict[str, Any]) -> None:
        self.id = run_id
        self.name = f"name-{run_id}"
        self.state = state
        self.config = metrics["config"]
        self.summary = {
            k: v for k, v in metrics.items() if k not in ("config", "history", "provenance")
        }
        self.tags = list(metrics["config"]["tags"])
        self.commit = "feedbeef"
        self._history = metrics["history"]

    def scan_history(self):
        for entry in self._history:  # as Lightning logs them: 0-based epoch, train/ prefix
            row = {"epoch": entry["epoch"] - 1, "_step": entry["epoch"] * 10}
            row |= {f"train/{k}": v for k, v in entry.items() if k.startswith("entropy/")}
            yield row


class FakeApi:
    """What the report uses of ``wandb.Api``: ``runs(path)`` and ``sweep(path).runs``."""

    calls: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        t1 = {"dataset": "usps", "tags": ["table1", "sweep_table1"], "task_name": "table1"}
        done = [  # (id, layer, leaf, seed, M_A, G_A)
            ("a1", "ff", None, 0, 99.0, 93.0),
            ("a2", "ff", None, 1, 98.0, 92.0),
            ("b1", "fff", 4, 0, 90.0, 80.0),
            ("b2", "fff", 4, 1, 92.0, 84.0),
        ]
        self._runs = [
            FakeRun(
                run_id,
                "finished",
                run_metrics(**t1, layer=layer, leaf=leaf, width=16, seed=seed, M_A=ma, G_A=ga),
            )
            for run_id, layer, leaf, seed, ma, ga in done
        ]
        crashed = run_metrics(**t1, layer="fff", leaf=4, width=16, seed=2, M_A=1.0, G_A=1.0)
        crashed["status"] = "running"  # the summary as the run left it
        self._runs.append(FakeRun("c1", "crashed", crashed))

    def runs(self, path: str):
        FakeApi.calls.append(("runs", path))
        return iter(self._runs)

    def sweep(self, path: str):
        FakeApi.calls.append(("sweep", path))
        return type("Sweep", (), {"runs": self._runs})()


def test_runs_from_wandb_through_the_api(monkeypatch, report_main, tmp_path):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    FakeApi.calls = []
    out = tmp_path / "report"
    assert report_main("--wandb", "team/fastff", "--sweep", "sw1", "-o", out) == 0
    assert FakeApi.calls == [("sweep", "team/fastff/sw1")]
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False).set_index("run_id")
    assert list(runs.index) == ["a1", "a2", "b1", "b2", "c1"]
    assert runs.loc["c1", "status"] == "failed"  # crashed with a stale "running" summary
    assert set(runs["git_commit"]) == {"feedbeef"} and set(runs["table"]) == {"table1"}
    t1 = pd.read_csv(out / "tables" / "table1_usps.csv")
    fff = t1[t1["layer"] == "fff"].iloc[0]
    assert (fff["n_runs"], fff["G_A_mean"]) == (2, 82.0)  # the crashed run is not averaged in
    assert fff["G_A_std"] == pytest.approx(pd.Series([80.0, 84.0]).std(), abs=1e-4)
    assert (out / "figures" / "entropy_table1_usps.png").is_file()  # from the runs' histories
    assert "W&B team/fastff sweep sw1" in (out / "report.md").read_text()


def test_wandb_runs_and_local_runs_together(monkeypatch, handmade, report_main, tmp_path):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    out = tmp_path / "report"
    assert report_main(handmade, "--wandb", "team/fastff", "-o", out) == 0
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert {"a1", "t1/ff_w16_s0"} <= set(runs["run_id"])


def test_wandb_unreachable_is_one_line(monkeypatch, report_main, capsys):
    import wandb

    def no_api(*args: Any, **kwargs: Any) -> None:
        raise wandb.errors.UsageError("api_key not configured (no-tty)\nmore detail")

    monkeypatch.setattr(wandb, "Api", no_api)
    assert report_main("--wandb", "team/fastff") == 2
    line = _one_error_line(capsys)
    assert "cannot read the runs of project team/fastff (api_key not configured" in line


def test_wandb_result_keys_cover_the_training_results():
    from fastff.report.wandb_source import SUMMARY_KEYS
    from fastff.results_schema import RESULT_KEYS as TRAINING_KEYS

    assert set(TRAINING_KEYS) <= set(SUMMARY_KEYS)


@pytest.mark.slow
def test_the_report_is_a_wandb_artifact_offline(handmade, report_main, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_main(handmade, "-o", out, "--table", "table1", "--wandb-mode", "offline") == 0
    captured = capsys.readouterr()
    assert "artifact fastff-report in run" in captured.out, captured.err  # no W&B warning
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, (runs, captured.err)
    data = runs[0].read_bytes()
    assert b"fastff-report" in data and b"report.md" in data
