"""A sweep's state.json is data: a run_dir outside the sweep, foreign parameters or an unreadable
file are refused before anything is deleted or run; a finished result the runner did not record
is adopted, never deleted. In process, with stand-in trials (the command lines are in
tests/test_user_errors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fastff.sweep import SweepError, load_spec
from fastff.sweep.estimate import dry_run
from fastff.sweep.local import LocalRunner
from fastff.sweep.state import SweepState

pytestmark = pytest.mark.usefixtures("fake_trials")


def _run(path: Path, out: Path, **kwargs) -> SweepState:
    return LocalRunner(load_spec(path), out, console=Console(quiet=True), **kwargs).run()


def _edit_state(out: Path, edit) -> Path:
    path = out / "fake" / "state.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _outside(tmp_path: Path) -> Path:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "marker.txt").write_text("keep me")
    return folder


def test_a_run_dir_outside_the_sweep_is_refused_and_nothing_is_deleted(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2]}})
    _run(path, tmp_path / "out")
    outside = _outside(tmp_path)

    def point_outside(data):
        data["trials"][1]["status"] = "running"
        data["trials"][1]["run_dir"] = str(outside)

    _edit_state(tmp_path / "out", point_outside)
    for call in (
        lambda: _run(path, tmp_path / "out"),
        lambda: dry_run(load_spec(path), tmp_path / "out", console=Console(quiet=True)),
    ):
        with pytest.raises(SweepError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message
        assert f"trial 0002 has run_dir={str(outside)!r}" in message
        assert "outside" in message and "nothing was deleted" in message
        assert (outside / "marker.txt").read_text() == "keep me"


@pytest.mark.parametrize("how", ["dotdot", "symlink", "trials_itself"])
def test_run_dirs_that_only_look_inside_are_refused(write_sweep, tmp_path, how):
    path = write_sweep({"x": {"values": [1]}})
    out = tmp_path / "out"
    _run(path, out)
    outside = _outside(tmp_path)
    trials = (out / "fake" / "trials").resolve()
    if how == "dotdot":
        run_dir = str(trials / ".." / ".." / ".." / "precious")
    elif how == "symlink":
        (trials / "0001").rename(trials / "0001.real")
        (trials / "0001").symlink_to(outside)
        run_dir = str(trials / "0001")
    else:
        run_dir = str(trials)

    def edit(data):
        data["trials"][0]["status"] = "running"
        data["trials"][0]["run_dir"] = run_dir

    _edit_state(out, edit)
    with pytest.raises(SweepError, match="outside"):
        _run(path, out)
    assert (outside / "marker.txt").read_text() == "keep me"
    assert trials.is_dir()


def test_foreign_parameters_in_the_state_are_refused_before_running(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1]}, "act": {"values": ["relu"]}})
    out = tmp_path / "out"
    _run(path, out)
    marker = tmp_path / "marker"
    payload = "{_target_:numpy.savetxt,fname:'" + str(marker) + "',X:[1.0]}"

    def foreign_value(data):
        data["trials"][0]["status"] = "pending"
        data["trials"][0]["params"]["act"] = payload

    _edit_state(out, foreign_value)
    with pytest.raises(SweepError) as caught:
        _run(path, out)
    assert "trial 0001: act._target_='numpy.savetxt' is not one of fastff's builders" in str(
        caught.value
    )

    def foreign_key(data):
        data["trials"][0]["params"] = {"x": 1, "layer._target_": "numpy.savetxt"}

    _edit_state(out, foreign_key)
    with pytest.raises(SweepError, match=r"parameter 'layer\._target_' is not one of the sweep"):
        _run(path, out)
    assert not marker.exists()


def test_a_foreign_target_the_sweep_file_itself_gives_is_the_users_choice(write_sweep, tmp_path):
    """Like its command, the sweep file is the user's own: a state holding the file's values
    resumes."""
    own = "{_target_:my_package.MyLayer,_partial_:true}"
    path = write_sweep({"x": {"values": [1, 2]}, "layer": {"values": [own]}})
    out = tmp_path / "out"
    _run(path, out)
    _edit_state(out, lambda data: data["trials"][1].update(status="running"))
    state = _run(path, out)
    assert [t.attempts for t in state.trials] == [1, 2]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"name": "fake", "trials": [', "Expecting"),
        ("", "Expecting value"),
        ("[]", "it holds list, not a mapping"),
        ('{"name": "fake"}', "it lacks"),
        (None, "trials must be list"),
        (None, "trials[0].attempts must be int"),
        (None, "trials[0].status must be one of"),
        (None, "trials[0] has an unknown key 'shell'"),
    ],
)
def test_an_unreadable_state_is_one_line_and_new_moves_it_aside(
    write_sweep, tmp_path, content, problem
):
    path = write_sweep({"x": {"values": [1]}})
    out = tmp_path / "out"
    _run(path, out)
    state_path = out / "fake" / "state.json"
    if content is None:
        edits = {
            "trials must be list": lambda d: d.update(trials="all"),
            "trials[0].attempts must be int": lambda d: d["trials"][0].update(attempts="1"),
            "trials[0].status must be one of": lambda d: d["trials"][0].update(status="done"),
            "trials[0] has an unknown key 'shell'": lambda d: d["trials"][0].update(shell="rm"),
        }
        _edit_state(out, edits[problem])
    else:
        state_path.write_text(content)
    broken = state_path.read_text()
    for call in (
        lambda: _run(path, out),
        lambda: dry_run(load_spec(path), out, console=Console(quiet=True)),
    ):
        with pytest.raises(SweepError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and f"the sweep state {state_path} is unreadable" in message
        assert problem in message and "--new" in message
    assert state_path.read_text() == broken
    state = _run(path, out, new=True)
    assert [t.status for t in state.trials] == ["finished"]
    (aside,) = [p for p in out.iterdir() if p.name.startswith("fake.")]
    assert (aside / "state.json").read_text() == broken


def test_a_trial_that_finished_unrecorded_is_adopted_not_rerun(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2]}, "hydra": {"value": True}})
    out = tmp_path / "out"
    first = _run(path, out)
    run_dir = Path(first.trials[1].run_dir)
    (run_dir / "extra.txt").write_text("the trial's own file")
    _edit_state(out, lambda d: d["trials"][1].update(status="running", metric=None, pid=123))
    state = _run(path, out)
    trial = state.trials[1]
    assert trial.status == "finished" and trial.attempts == 1 and trial.note is None
    assert trial.metric == -((2 - 3.0) ** 2)
    assert (run_dir / "extra.txt").is_file()


def test_a_result_of_another_commit_is_adopted_and_flagged(write_sweep, tmp_path, monkeypatch):
    monkeypatch.setattr("fastff.sweep.local.this_commit", lambda: "1234567890abcdef")
    path = write_sweep(
        {"x": {"values": [1]}, "hydra": {"value": True}, "commit": {"value": "c0ffee"}}
    )
    out = tmp_path / "out"
    _run(path, out)
    _edit_state(out, lambda d: d["trials"][0].update(status="running"))
    state = _run(path, out)
    trial = state.trials[0]
    assert trial.status == "finished" and trial.attempts == 1
    assert trial.note == "made at git commit c0ffee, this checkout is at 1234567890ab"
    saved = json.loads((out / "fake" / "state.json").read_text())
    assert saved["trials"][0]["note"] == trial.note
    # the report flags it too
    from fastff.report.cli import main as report

    assert (
        report([str(out / "fake"), "-o", str(tmp_path / "report"), "--wandb-mode", "disabled"]) == 0
    )
    runs = (tmp_path / "report" / "runs.csv").read_text().splitlines()
    (row,) = [line for line in runs if line.startswith("trials/0001,")]
    assert "other_commit" in row.split(",")
    assert (
        f"trials/0001: {trial.note} (adopted by fastff.sweep; flagged)"
        in (tmp_path / "report" / "report.md").read_text()
    )


def test_a_finished_result_of_other_settings_is_kept_aside_not_deleted(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1]}, "hydra": {"value": True}})
    out = tmp_path / "out"
    first = _run(path, out)
    run_dir = Path(first.trials[0].run_dir)
    (run_dir / ".hydra" / "overrides.yaml").write_text('["x=5", "hydra=True"]')
    before = (run_dir / "metrics.json").read_text()
    _edit_state(out, lambda d: d["trials"][0].update(status="running"))
    state = _run(path, out)
    assert state.trials[0].attempts == 2 and state.trials[0].status == "finished"
    (kept,) = [p for p in run_dir.parent.iterdir() if p.name.startswith("0001.kept-")]
    assert (kept / "metrics.json").read_text() == before


def test_dry_run_lists_the_trials_that_would_fail(tmp_path):
    sweep = tmp_path / "widths.yaml"
    sweep.write_text(
        "name: widths\nmethod: grid\nmetric: {name: G_A, goal: maximize}\n"
        "parameters:\n  layer.width: {values: [-5, 48, 'abc', 64]}\n  logger: {value: none}\n"
        'command: ["${env}", "${interpreter}", -m, fastff.train, "${args_no_hyphens}"]\n'
    )
    console = Console(record=True, width=300)
    trials, failures = dry_run(load_spec(sweep), tmp_path / "out", console=console)
    assert len(trials) == 4 and sorted(failures) == ["0001", "0002", "0003"]
    assert failures["0001"].startswith("error: layer.width")
    assert "-5" in failures["0001"] and "48" in failures["0002"] and "abc" in failures["0003"]
    text = console.export_text()
    assert "3 of the 4 trials to run would fail:" in text
    for line in failures.values():
        assert line in " ".join(text.split())
    assert not (tmp_path / "out").exists()


def test_this_commit_is_the_checkouts():
    import subprocess

    import fastff
    from fastff.sweep.adopt import this_commit

    here = Path(fastff.__file__).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("fastff is not in a git checkout here")
    assert this_commit() == head.stdout.strip()
