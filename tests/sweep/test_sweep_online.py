"""The W&B server path, as far as it goes without a server: the configuration submitted, the
agent command, and that a trial started by a W&B agent asks W&B for online mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rich.console import Console

from fastff.sweep import load_spec, online
from fastff.sweep.cli import main
from fastff.tracking import resolve_wandb_mode

ROOT = Path(__file__).resolve().parents[2]
TABLE1 = ROOT / "sweeps" / "table1.yaml"


class FakeWandb:
    """Records wandb.sweep calls; stands in for the server."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import wandb

        self.created: list[dict] = []
        monkeypatch.setattr(wandb, "sweep", self.sweep)
        monkeypatch.setattr(wandb, "Api", lambda: self)
        self.default_entity = "me"
        self.settings = {"base_url": "https://api.wandb.ai"}

    def sweep(self, sweep, entity=None, project=None):
        self.created.append({"sweep": sweep, "entity": entity, "project": project})
        return "abc123"


def test_the_submitted_configuration_is_the_file(tmp_path):
    spec = load_spec(TABLE1)
    submitted = online.server_config(spec)
    assert submitted == yaml.safe_load(TABLE1.read_text())
    unnamed = tmp_path / "mine.yaml"
    config = dict(spec.config)
    config.pop("name")
    unnamed.write_text(yaml.safe_dump(config))
    assert online.server_config(load_spec(unnamed))["name"] == "mine"


def test_agent_command_and_sweep_path():
    command = online.agent_command("me/fastff/abc123", count=5)
    assert command[-4:] == ["agent", "--count", "5", "me/fastff/abc123"]
    assert Path(command[0]).name == "wandb" or command[1:3] == ["-m", "wandb"]
    assert online.agent_command("e/p/i")[-2:] == ["agent", "e/p/i"]
    assert online.sweep_path("abc", "me", "proj") == "me/proj/abc"
    assert online.sweep_path("e/p/abc", "me", "proj") == "e/p/abc"


def test_online_creates_the_sweep_prints_its_address_and_runs_the_agent(monkeypatch):
    server = FakeWandb(monkeypatch)
    ran: list[list[str]] = []
    console = Console(record=True, width=200)
    status = online.run_online(
        load_spec(TABLE1), console=console, count=3, runner=lambda c: ran.append(c) or 0
    )
    assert status == 0
    assert server.created == [
        {"sweep": online.server_config(load_spec(TABLE1)), "entity": None, "project": "fastff"}
    ]
    assert ran == [online.agent_command("me/fastff/abc123", 3)]
    from wandb.util import app_url

    address = f"{app_url('https://api.wandb.ai')}/me/fastff/sweeps/abc123"
    assert address in console.export_text()


def test_joining_a_sweep_creates_nothing(monkeypatch):
    server = FakeWandb(monkeypatch)
    ran: list[list[str]] = []
    online.run_online(
        load_spec(TABLE1),
        sweep_id="team/proj/xyz",
        console=Console(quiet=True),
        runner=lambda c: ran.append(c) or 0,
    )
    assert server.created == [] and ran == [online.agent_command("team/proj/xyz")]


def test_cli_goes_online_with_the_flag_or_wandb_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(online, "run_online", lambda spec, **kw: calls.append(kw) or 0)
    assert main([str(TABLE1), "--online", "--project", "p", "--max-trials", "7"]) == 0
    assert calls[-1]["project"] == "p" and calls[-1]["count"] == 7
    monkeypatch.setenv("WANDB_MODE", "online")
    assert main([str(TABLE1), "--sweep-id", "e/p/i"]) == 0
    assert calls[-1]["sweep_id"] == "e/p/i"


def test_a_trial_started_by_a_wandb_agent_goes_online(monkeypatch):
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert resolve_wandb_mode("offline") == "online"
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit WANDB_MODE still wins
    assert resolve_wandb_mode("offline") == "disabled"


def test_the_trials_wandb_logger_is_built_online_under_an_agent(monkeypatch, make_cfg):
    from fastff.training import builders

    requested: list[str] = []
    monkeypatch.setattr(builders, "wandb_logger", lambda entry, mode: requested.append(mode))
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    builders.build_loggers(make_cfg("data=digits"))
    monkeypatch.delenv("WANDB_SWEEP_ID")
    builders.build_loggers(make_cfg("data=digits"))
    assert requested == ["online", "offline"]  # what wandb.init is asked for
