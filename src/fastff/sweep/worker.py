"""The warm trial worker: a local sweep's trials of ``python -m fastff.train`` without paying
for Python, torch and Lightning start-up (several seconds) once per trial.

One worker process per sweep runner (``python -m fastff.sweep.worker fastff.train``) imports the
trial program's dependencies once and then forks one child per trial. A child first becomes what
a fresh ``python -m fastff.train <overrides> hydra.run.dir=<dir>`` would be (its own
``stdout.log`` / ``stderr.log`` on file descriptors 1 and 2, ``/dev/null`` on 0, the trial's
environment, torch's thread count, default signal handlers, fresh random states, no Hydra
state) and then runs the module as ``__main__`` (:func:`runpy.run_module`, as ``-m`` does), so
its Hydra run dir, logs, ``metrics.json`` and exit status are those of the subprocess: a
``SystemExit`` is its exit status, an uncaught exception prints its traceback and exits 1, a
signal ends it as it ends a process. It ends as Python ends a program (threads joined,
``atexit`` callbacks, files flushed) but skips the teardown of the imported modules, about 2 s
a process (:func:`exit_as_python_would`). A crash, ``os._exit`` or ``SIGKILL`` of one trial
ends that child only; the worker and the sweep go on. The worker gets ``SIGKILL`` when its
runner dies and its children when it dies (``PR_SET_PDEATHSIG``), as subprocess trials do.

The runner and the worker talk in JSON lines over the worker's stdin and stdout::

    worker -> runner  {"ready": pid, "threads": n}            imports done; torch's count
    runner -> worker  {"run": id, "args": [...], "stdout": path, "stderr": path,
                       "env": {...}, "cwd": path}
    worker -> runner  {"started": id, "pid": pid}
    runner -> worker  {"signal": id, "signum": 15}            (the worker signals only a child
                                                               it has not reaped: no pid reuse)
    worker -> runner  {"exited": id, "returncode": rc}        (Popen's: -N for signal N)

Closing the worker's stdin ends it (its remaining children get ``SIGKILL``).

Threads: the worker starts with the trials' environment (``OMP_NUM_THREADS`` etc. = the runner's
thread share) before torch is imported, so torch picks the count a fresh trial process picks
(the share, capped by torch at the usable cores); each child sets that count again with
``torch.set_num_threads`` (``OMP_NUM_THREADS`` no longer acts once torch is imported), and the
runner starts a new worker if the trials' environment changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

WARM_MODULES = {
    "fastff.train": (
        "fastff.train",
        # imported by a trial when first used (together ~0.9 s; `python -X importtime`):
        "sklearn.datasets",  # digits
        "sklearn.model_selection",  # the fixed test split of digits and mnist5k
        "torch.utils.cpp_extension",  # the CPU kernels' build folder
        "wandb",  # the default logger (W&B offline)
    )
}
"""Trial programs (``python -m <key>``) the worker runs, and the modules it imports beforehand.
Benchmarks (``fastff.bench``) keep a fresh process each: their numbers are timings."""
_PR_SET_PDEATHSIG = 1


def warm_module(command: Sequence[str]) -> str | None:
    """The module a trial command runs when the warm worker can run it, else None.

    The command must be the sweep files' standard form, ``[/usr/bin/env] <interpreter> -m
    <module> <overrides...>``, with this interpreter and a module of :data:`WARM_MODULES`;
    every other command (another program, interpreter options) keeps its own process.
    """
    line = list(command)
    if line and line[0] in ("/usr/bin/env", "env"):
        line = line[1:]
    if len(line) < 3 or line[0] != sys.executable or line[1] != "-m":
        return None
    if line[2] not in WARM_MODULES:
        return None
    return line[2]


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# -- the runner's side ------------------------------------------------------------------------
class WorkerError(Exception):
    """The worker could not start or stopped answering."""


class WarmWorker:
    """The runner's handle on one worker process for ``module``.

    Args:
        module: the trial program, a key of :data:`WARM_MODULES`.
        env: the worker's environment (the trials' environment: thread variables set before
            torch is imported).
        log: the worker's own stderr (import warnings; never a trial's output).
    """

    def __init__(self, module: str, env: Mapping[str, str], log: Path) -> None:
        self.module = module
        self.env = dict(env)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastff.sweep.worker", module],
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._out = self.process.stdout.fileno()
        self._buffer = b""
        self._next_id = 0
        self.pids: dict[int, int] = {}
        self.returncodes: dict[int, int] = {}
        self.alive = True
        try:  # the imports take seconds: a Ctrl-C may come meanwhile
            message = self._read_message(block=True)
        except BaseException:
            self.close()
            raise
        if message is None or "ready" not in message:
            self.close()
            raise WorkerError(f"the warm trial worker did not start (see {log})")

    def _read_message(self, block: bool) -> dict[str, Any] | None:
        """The next message; None when none is waiting (``block=False``) or the worker ended."""
        while b"\n" not in self._buffer:
            if not self.alive:
                return None
            if not block and not select.select([self._out], [], [], 0)[0]:
                return None
            chunk = os.read(self._out, 65536)
            if not chunk:
                self._lost()
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _handle(self, message: dict[str, Any]) -> None:
        if "started" in message:
            self.pids[message["started"]] = message["pid"]
        elif "exited" in message:
            self.returncodes[message["exited"]] = message["returncode"]

    def _lost(self) -> None:
        """The worker ended: its children got SIGKILL with it."""
        self.alive = False
        for trial in self.pids:
            self.returncodes.setdefault(trial, -signal.SIGKILL)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            self._lost()
            raise WorkerError("the warm trial worker ended") from None

    def pump(self) -> None:
        """Read every message waiting (trials started or ended)."""
        while (message := self._read_message(block=False)) is not None:
            self._handle(message)

    def run(
        self,
        args: Sequence[str],
        stdout: Path,
        stderr: Path,
        env: Mapping[str, str],
    ) -> WarmProcess:
        """Start one trial: ``python -m <module> *args`` in a forked child with ``env``."""
        trial = self._next_id
        self._next_id += 1
        self._send(
            {
                "run": trial,
                "args": list(args),
                "stdout": str(stdout),
                "stderr": str(stderr),
                "env": dict(env),
                "cwd": os.getcwd(),
            }
        )
        while trial not in self.pids:
            message = self._read_message(block=True)
            if message is None:
                raise WorkerError("the warm trial worker ended")
            self._handle(message)
        return WarmProcess(self, trial, self.pids[trial])

    def signal(self, trial: int, signum: int) -> None:
        """Send ``signum`` to the trial's child if it has not ended."""
        if self.alive and trial not in self.returncodes:
            with contextlib.suppress(WorkerError):
                self._send({"signal": trial, "signum": int(signum)})

    def close(self) -> None:
        """End the worker (its children, if any are left, get SIGKILL)."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.alive = False
        self._log.close()


class WarmProcess:
    """One trial in the worker, with the part of :class:`subprocess.Popen` the runner uses."""

    def __init__(self, worker: WarmWorker, trial: int, pid: int) -> None:
        self.worker = worker
        self.trial = trial
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status once the trial ended (``-N``: killed by signal N), else None."""
        if self.returncode is None:
            self.worker.pump()
            self.returncode = self.worker.returncodes.get(self.trial)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; raises :class:`subprocess.TimeoutExpired` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"trial {self.trial}", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.worker.signal(self.trial, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmTrials:
    """What the local runner starts trials with: :meth:`start` runs a trial in the warm worker
    when its command is one the worker can run (:func:`warm_module`), else returns None (the
    runner starts a subprocess). The worker starts with the first such trial and again after
    it died; if it cannot start, every later trial gets a fresh process.

    Args:
        log: the worker's own stderr (``<sweep>/worker.log``).
        console: where to say that the worker runs, or why it does not.
    """

    def __init__(self, log: Path, console: Any) -> None:
        self.log = log
        self.console = console
        self.worker: WarmWorker | None = None
        self.broken = False

    def start(
        self, command: Sequence[str], run_dir: Path, env: Mapping[str, str]
    ) -> WarmProcess | None:
        """Start ``command`` (the trial's full command line, ``hydra.run.dir`` included) in the
        warm worker, its output to ``run_dir/stdout.log`` and ``stderr.log`` (which exist)."""
        module = None if self.broken else warm_module(command)
        if module is None:
            return None
        args = list(command)[list(command).index(module) + 1 :]
        if self.worker is not None and self.worker.alive and self.worker.env != dict(env):
            return None  # imported under another environment: a fresh process is exact
        for _ in range(2):  # a worker that died since the last trial is started again
            if self.worker is None or not self.worker.alive:
                if self.worker is not None:
                    self.worker.close()
                try:
                    self.worker = WarmWorker(module, env, self.log)
                except (WorkerError, OSError) as err:
                    self.broken, self.worker = True, None
                    self.console.print(f"[yellow]{err}; trials run as fresh processes[/yellow]")
                    return None
                self.console.print(
                    f"trials run in a warm worker ({module} imported once, one forked process "
                    "per trial; --fresh-processes: a new process each)"
                )
            try:
                return self.worker.run(args, run_dir / "stdout.log", run_dir / "stderr.log", env)
            except WorkerError:
                continue
        return None

    def close(self) -> None:
        """End the worker (after the runner stopped its trials)."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None


# -- the worker's side ------------------------------------------------------------------------
def _write(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def _reap(children: dict[int, int]) -> None:
    """Report every child that ended."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        trial = children.pop(pid, None)
        if trial is not None:
            _write({"exited": trial, "returncode": os.waitstatus_to_exitcode(status)})


def serve(module: str) -> dict[str, Any]:
    """The worker's loop: import ``module``'s dependencies, then fork a child per request.
    Returns only in a child, with its request; exits when the runner closes stdin."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the trials, then the runner
    for name in WARM_MODULES[module]:
        importlib.import_module(name)
    torch = sys.modules.get("torch")
    # a fresh trial's count: torch reads OMP_NUM_THREADS (set by the runner) and caps it
    threads = torch.get_num_threads() if torch is not None else None
    _write({"ready": os.getpid(), "threads": threads})
    children: dict[int, int] = {}  # pid -> trial
    buffer = b""
    while True:
        readable = select.select([0], [], [], 0.05)[0]
        _reap(children)
        if not readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:  # the runner is done (or gone)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while children:
                _reap(children)
                time.sleep(0.01)
            sys.exit(0)
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            if "signal" in request:
                for pid, trial in children.items():
                    if trial == request["signal"]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, request["signum"])
                continue
            pid = os.fork()
            if pid == 0:
                return {**request, "threads": threads}
            children[pid] = request["run"]
            _write({"started": request["run"], "pid": pid})


def become_trial(module: str, request: dict[str, Any]) -> None:
    """In a forked child: become a fresh ``python -m <module> <args>`` and run it. Its
    ``SystemExit``, exception or signal ends this process as it would end that one."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the worker died before the line above
        os._exit(128 + signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker ignores it
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        handle = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])

    import random

    if request["threads"] is not None:  # OMP_NUM_THREADS acts only before torch's import
        sys.modules["torch"].set_num_threads(request["threads"])
    random.seed()  # a fresh process seeds these from the OS; forked, they would be shared
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    with contextlib.suppress(ImportError):
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()

    import runpy

    args = [str(arg) for arg in request["args"]]
    sys.orig_argv = [sys.executable, "-m", module, *args]
    sys.argv = [module, *args]  # runpy puts the module's file first, as -m does
    sys.modules.pop(module, None)  # run afresh as __main__, as -m does
    exit_as_python_would(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))


def _exit_status(code: object) -> int:
    """The exit status Python gives ``SystemExit(code)`` (a non-number is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def exit_as_python_would(run: Any) -> NoReturn:
    """Run ``run()`` and end this process as Python ends a program, without the module teardown
    (as :mod:`multiprocessing`'s forked children end): a ``SystemExit`` gives its status, an
    uncaught exception prints its traceback (``sys.excepthook``) and gives 1, an uncaught
    ``KeyboardInterrupt`` ends the process by SIGINT; then, in Python's order, non-daemon threads
    are joined, the ``atexit`` callbacks run (logging, W&B, ``weakref.finalize``), every open
    file is flushed and the process exits. Tearing down the modules of torch and Lightning takes
    about 2 s a process and changes nothing outside it."""
    import atexit
    import gc
    import io
    import threading

    status, interrupted = 0, False
    try:
        run()
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        interrupted = True
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for obj in gc.get_objects():  # what a file's finalizer would do: write what it buffers
        if isinstance(obj, io.IOBase):
            with contextlib.suppress(Exception):
                if not obj.closed and obj.writable():
                    obj.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def main(argv: list[str]) -> None:
    """``python -m fastff.sweep.worker MODULE``: started by :class:`WarmWorker`."""
    module = argv[0]
    request = serve(module)  # in a child from here on
    become_trial(module, request)


if __name__ == "__main__":
    main(sys.argv[1:])
