"""Shared plumbing of the Hydra entry points: where conf/ is, clean exits on user errors and
signals, a quiet console (library chatter goes to the run's log file only).

The error types and :func:`instantiate_or_config_error` live below every floor
(:mod:`fastff.errors`, :mod:`fastff.instantiate`) and are re-exported here for compatibility.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fastff.config_dir import config_dir
from fastff.errors import StopRun, Terminated
from fastff.instantiate import instantiate_or_config_error as instantiate_or_config_error

T = TypeVar("T")

log = logging.getLogger("fastff")


def unknown_override_line(err: BaseException) -> str | None:
    """The ``error:`` line for Hydra's "Could not override 'a.b'" (a command-line override of a
    key the composed config does not have, usually a typo), or None for any other error.

    ``layer.leaf_widht=8`` gives ``error: layer.leaf_widht: unknown setting 'leaf_widht' in
    layer; did you mean leaf_width? ...``; the nearest key is looked up among the keys of the
    config node the override tried to reach.
    """
    from fastff.setting_names import unknown_setting_hint

    cause = err.__cause__
    match = re.match(r"Could not override '([^']+)'", str(err))
    if match is None or cause is None:
        return None
    override = match.group(1)
    missing = str(getattr(cause, "key", "") or "")
    parent = getattr(cause, "parent_node", None)
    full_key = str(getattr(cause, "full_key", "") or missing)
    if not missing or parent is None or not hasattr(parent, "keys"):
        return None
    where = full_key[: -len(missing) - 1] if full_key.endswith(f".{missing}") else ""
    place = where or "the top-level config"
    hint = unknown_setting_hint(missing, parent.keys())
    return (
        f"error: {override}: unknown setting {missing!r} in {place}{hint} "
        f"(`--cfg job` lists the settings; +key=value adds a new one)"
    )


def composition_error_line(err: BaseException) -> str:
    """One ``error:`` line for any other error Hydra meets composing the config: a missing
    config (``data=nonexistent``: the available options listed), an override Hydra cannot parse
    (``layer.width=$(...)``: the override and the parser's reason), anything else joined into one
    line."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, OverrideParseException):
        reason = text.splitlines()[0] if text else "cannot be parsed"
        return (
            f"error: {err.override}: Hydra cannot parse this override ({reason}); quote a value "
            "with special characters, e.g. 'key=\"a value\"' "
            "(https://hydra.cc/docs/advanced/override_grammar/basic/)"
        )
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if isinstance(err, MissingConfigException) and missing:
        group, name = missing.groups()
        listing = text.split("Available options", 1)[-1].split("Config search path", 1)[0]
        options = [line.strip() for line in listing.splitlines() if line.startswith("\t")]
        listed = f". Available options in {group!r}: {', '.join(options)}" if options else ""
        return f"error: {group}={name}: there is no {name!r} in conf/{group}/{listed}"
    return "error: " + " ".join(text.split())


@contextlib.contextmanager
def _unknown_overrides_as_lines() -> Iterator[None]:
    """Within the block, Hydra's multi-line "Could not override" error (a misspelt key on the
    command line) becomes one ``error:`` line and exit status 2 (see
    :func:`unknown_override_line`); every other error is reported by Hydra as usual.

    Any other composition error (a missing config, an override Hydra cannot parse) is one line
    too (:func:`composition_error_line`), also exit status 2.

    Hydra composes the config inside ``hydra._internal.utils.run_and_report``, which prints and
    exits; there is no public hook before composition, so that function is wrapped here. If a
    Hydra version no longer has it, Hydra's own message is shown (the tests pin the behaviour).
    """
    try:
        from hydra._internal import utils as hydra_utils
        from hydra.errors import ConfigCompositionException, OverrideParseException
    except ImportError:  # pragma: no cover - another Hydra layout
        yield
        return
    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:  # pragma: no cover
        yield
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        def translated() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as err:
                line = unknown_override_line(err) or composition_error_line(err)
                print(line, file=sys.stderr)
                sys.exit(2)

        return original(translated)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def hydra_entry(config_name: str) -> Callable[[Callable[[Any], T]], Callable[[], T | None]]:
    """``hydra.main`` over fastff's ``conf/`` (``config_name``: ``train``, ``eval``, ...), with
    a misspelt command-line key reported as one ``error:`` line naming the closest valid key
    (exit status 2) instead of Hydra's multi-line "Could not override" message."""
    import hydra

    def decorate(task: Callable[[Any], T]) -> Callable[[], T | None]:
        hydra_main = hydra.main(
            version_base="1.3", config_path=config_dir(), config_name=config_name
        )(task)

        @functools.wraps(task)
        def entry() -> T | None:
            with _unknown_overrides_as_lines():
                return hydra_main()

        return entry

    return decorate


def exit_on_user_error(func: Callable[[], T], errors: tuple[type[BaseException], ...]) -> T:
    """Run ``func``; a user error (one of ``errors``) prints one line and exits with status 2."""
    try:
        return func()
    except errors as err:
        _exit_with_line(f"error: {err}", 2)


@contextlib.contextmanager
def signals_raise_terminated() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise :class:`Terminated` in the main thread (Lightning
    composes its own SIGTERM handler with this one while it fits)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave the signals alone
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_entry_point(func: Callable[[], T], user_errors: tuple[type[BaseException], ...]) -> T:
    """Run an entry point's work with honest exit statuses and one line per failure.

    - a user error (one of ``user_errors``): ``error: <key> ...``, status 2;
    - a :class:`StopRun` (e.g. divergence): ``error: ...``, status 1;
    - an OSError (a full disk, a folder that became unwritable): ``error: the run stopped: ...``
      naming the reason and the file when known, status 1 (the traceback goes to the run's log
      file); metrics.json has recorded status ``failed`` and that reason;
    - SIGTERM / SIGINT: one line, status 128 + signal number.

    In a Hydra multirun, a user error or StopRun of one job is recorded (see
    :class:`MultirunReport`) and the remaining jobs still run; a signal stops the multirun.
    """
    try:
        with signals_raise_terminated():
            return func()
    except user_errors as err:
        return _job_failed(f"error: {err}", 2)
    except StopRun as err:
        return _job_failed(f"error: {err}", err.exit_status)
    except OSError as err:
        log.error("the run stopped", exc_info=True, extra={FILE_ONLY: True})
        where = f" ({err.filename})" if err.filename else ""
        return _job_failed(
            f"error: the run stopped: {type(err).__name__}: {err.strerror or err}{where}; "
            "metrics.json says failed, and the checkpoints written before are kept",
            1,
        )
    except Terminated as err:
        _exit_with_line(f"fastff: {err}; the results so far are in metrics.json", 128 + err.signum)


MULTIRUN_FAILURES: list[str] = []
"""One line per failed job of the current Hydra multirun (read by :class:`MultirunReport`)."""


def _job_failed(line: str, status: int) -> Any:
    if _in_multirun():
        from hydra.core.hydra_config import HydraConfig

        job = HydraConfig.get().job
        overrides = " ".join(job.override_dirname.split(",")) if job.override_dirname else ""
        MULTIRUN_FAILURES.append(f"job #{job.num} ({overrides}): {line}")
        print(line, file=sys.stderr)
        return None
    _exit_with_line(line, status)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _exit_with_line(line: str, status: int) -> None:
    quiet_console()  # before a job starts (multirun checks) the console has no filter yet
    log.error("%s", line, extra={FILE_ONLY: True})  # the terminal gets the line below
    print(line, file=sys.stderr)
    sys.exit(status)


def writable_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the folder ``path`` cannot be created or written, or None: the nearest existing
    ancestor must be a folder this process may write to, and a folder made there (and removed
    at once) must really appear: permission bits say nothing for root, nor for ``/proc``, a
    read-only mount or a full disk."""
    import tempfile

    target = Path(path).absolute()
    for existing in (target, *target.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fastff-probe-", dir=existing))
    except OSError as err:
        return f"cannot create a folder in {str(existing)!r} ({err.strerror or err})"
    return None


def check_output_dir(config: Any, key: str) -> None:
    """Exit with one line (status 2) when the run dir ``key`` (``hydra.run.dir`` or
    ``hydra.sweep.dir``) cannot be created, before Hydra tries and fails with a traceback. A
    ``paths.output_dir`` set to a fixed path is checked too."""
    from omegaconf import OmegaConf

    for name in (key, "paths.output_dir"):
        parent, _, leaf = name.rpartition(".")
        try:
            interpolated = OmegaConf.is_interpolation(OmegaConf.select(config, parent), leaf)
            if interpolated and name == "paths.output_dir":
                continue
            value = OmegaConf.select(config, name, default=None)
        except Exception:  # an interpolation that only resolves inside the job
            continue
        if value is None:
            continue
        problem = writable_dir_problem(str(value))
        if problem:
            _exit_with_line(
                f"error: {name}: cannot create the output folder {str(value)!r}: {problem}; "
                "choose a writable folder (hydra.run.dir=..., or paths.log_dir=...)",
                2,
            )


FILE_ONLY = "fastff_file_only"
"""A log record with this attribute set goes to the run's log file, not to the terminal."""

NOISE = (
    "Tip: For seamless cloud logging",  # Lightning's litlogger advertisement
    "deprecat",  # dependencies' deprecation notices (e.g. Lightning's _pytree LeafSpec)
)
"""Parts of messages a user cannot act on: kept in the run's log file, not shown."""

LIGHTNING_INFO = (
    "GPU available:",  # the accelerator summary (fastff's summary names the device)
    "TPU available:",
    "HPU available:",
    "`Trainer.fit` stopped:",  # why fit ended (metrics.json: epochs and status)
    "Restoring states from the checkpoint path",  # testing the best checkpoint
    "Loaded model weights from the checkpoint",
    "Initializing distributed:",  # DDP start-up, one line per rank
    "distributed_backend=",
    "LOCAL_RANK:",
)
"""Beginnings of Lightning's INFO lines (after leading dashes and blank lines) that the
terminal does not show; they stay in the run's log file."""


class _ConsoleFilter(logging.Filter):
    """Drops what the terminal does not need (see :data:`NOISE`, :data:`LIGHTNING_INFO`,
    :data:`FILE_ONLY`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, FILE_ONLY, False):
            return False
        message = record.getMessage()
        if record.name == "py.warnings" and any(n in message.lower() for n in NOISE[1:]):
            return False
        if (
            record.name.startswith("lightning")
            and record.levelno <= logging.INFO
            and message.lstrip("-\n ").startswith(LIGHTNING_INFO)
        ):
            return False
        return not any(n in message for n in NOISE[:1])


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def quiet_console() -> None:
    """Keep the terminal to what a user can act on; everything stays in the run's log file.

    Called once a job's logging is set up (Hydra's ``on_job_start``): warnings are routed into
    logging (``py.warnings``), the terminal handlers drop :data:`NOISE` and
    :data:`LIGHTNING_INFO`, and Lightning's own terminal loggers also write into the run's log
    file.
    """
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    lightnings = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    console_filter = _ConsoleFilter()
    for handler in [*root.handlers, *(h for logger in lightnings for h in logger.handlers)]:
        if _is_console(handler) and not any(isinstance(f, _ConsoleFilter) for f in handler.filters):
            handler.addFilter(console_filter)
    for lightning in lightnings:
        if not lightning.propagate:
            for handler in files:
                if handler not in lightning.handlers:
                    lightning.addHandler(handler)
    logging.captureWarnings(True)


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
"""Lightning's loggers with terminal handlers of their own (the first two do not propagate)."""


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra < 1.1
    _HydraCallback = object  # type: ignore[assignment,misc]


def slurm_launcher_problem(config: Any) -> str | None:
    """The one-line error for ``hydra/launcher=slurm`` on a machine without SLURM, else None
    (submitit would fail with a traceback when it submits the first job)."""
    launcher = config.get("hydra", {}).get("launcher", {}).get("_target_") or ""
    if not str(launcher).endswith(".SlurmLauncher") or shutil.which("srun") is not None:
        return None
    return (
        "error: hydra/launcher=slurm: this machine has no SLURM (srun is not on the PATH); run "
        "the multirun on the cluster's login node, or use hydra/launcher=local to run its jobs "
        "here"
    )


class MultirunReport(_HydraCallback):
    """Hydra callback of every entry point (``conf/hydra/default.yaml``).

    Before the first job of a training multirun starts, every job's config is composed and
    checked, so one bad value (``--multirun layer.leaf_width=8,48,16``) stops the multirun with
    one line naming the job, before any work. A job that fails later (bad data, divergence) is
    recorded, the remaining jobs run, and the multirun ends with status 1 listing the failures.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        check_output_dir(config, "hydra.run.dir")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        quiet_console()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        check_output_dir(config, "hydra.sweep.dir")
        if (line := slurm_launcher_problem(config)) is not None:
            _exit_with_line(line, 2)
        if config.get("task_name") != "train":
            return
        from hydra import compose
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import ConfigCompositionException

        from fastff.config_checks import ConfigError, check_train_config

        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        for batch in BasicSweeper.split_arguments(parsed, None):
            for num, overrides in enumerate(batch):
                try:
                    check_train_config(
                        compose(config_name=config.hydra.job.config_name, overrides=overrides)
                    )
                except ConfigError as err:
                    _exit_with_line(f"error: job #{num} ({' '.join(overrides)}): {err}", 2)
                except ConfigCompositionException as err:
                    line = unknown_override_line(err)
                    if line is None:
                        return  # Hydra reports it when it composes the job
                    _exit_with_line(line, 2)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if MULTIRUN_FAILURES:
            lines = "\n".join(MULTIRUN_FAILURES)
            _exit_with_line(f"{len(MULTIRUN_FAILURES)} job(s) of the multirun failed:\n{lines}", 1)
