"""README.md's code blocks and commands, and how the README test runs a ``make`` line.

A block is a fenced ```` ```bash ```` or ```` ```python ```` block; it is named after its position
and the heading above it (``07-running-experiments``), so a failure names the block. A bash
block's commands are its lines with continuations joined and comments dropped, whitespace
normalised: the text that keys a command's plan in ``test_readme.py``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
STAMP = ".venv/.installed"
"""The Makefile's install stamp: ``make -o`` keeps make from ever (re)installing."""

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_HEADING = re.compile(r"^#{2,4} (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README.

    Attributes:
        name: ``<two-digit position>-<slug of the heading above it>``.
        lang: ``bash`` or ``python``.
        text: the block's text.
    """

    name: str
    lang: str
    text: str

    @property
    def commands(self) -> list[str]:
        """A bash block's commands (continuations joined, comments dropped)."""
        return shell_commands(self.text)


def _slug(heading: str) -> str:
    words = re.findall(r"[a-z0-9]+", heading.lower())
    return "-".join(words[:4])


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every bash and python block of the README, in order."""
    text = README.read_text() if text is None else text
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(text)]
    found = []
    for match in _FENCE.finditer(text):
        lang = match.group(1)
        if lang not in ("bash", "python"):
            continue
        heading = next((h for pos, h in reversed(headings) if pos < match.start()), "top")
        found.append((lang, match.group(2), heading))
    return [
        Block(f"{i:02d}-{_slug(heading)}", lang, body)
        for i, (lang, body, heading) in enumerate(found)
    ]


def strip_comment(line: str) -> str:
    """``line`` without its shell comment (a ``#`` outside quotes, at the start or after a
    blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(text: str) -> list[str]:
    """The commands of a bash block, one string each, whitespace normalised."""
    commands, pending = [], ""
    for raw in text.splitlines():
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join((pending + line).split())
        pending = ""
        if command:
            commands.append(command)
    return commands


def make_script(command: str, extra_args: tuple[str, ...], env: dict[str, str]) -> str:
    """The shell script ``make`` would run for ``command`` (a README ``make ...`` line, maybe
    after ``VAR=value`` assignments), with ``extra_args`` appended to its ``ARGS``.

    Read from ``make -n`` with the install stamp taken as up to date, so nothing is installed;
    ``$(PYTHON)`` is the test's interpreter where the command does not set it.
    """
    words = shlex.split(command)
    start = words.index("make")
    assignments = dict(word.split("=", 1) for word in words[:start])
    variables, targets = {}, []
    for word in words[start + 1 :]:
        if "=" in word:
            key, value = word.split("=", 1)
            variables[key] = value
        else:
            targets.append(word)
    if extra_args:
        args = [variables.get("ARGS", ""), *map(shlex.quote, extra_args)]
        variables["ARGS"] = " ".join(args).strip()
    variables.setdefault("PYTHON", env["README_TEST_PYTHON"])
    dry = subprocess.run(
        ["make", "-n", "-s", "--no-print-directory", "-o", STAMP, "-C", str(ROOT), *targets]
        + [f"{key}={value}" for key, value in variables.items()],
        env={**env, **assignments},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    exports = [f"export {key}={shlex.quote(value)}" for key, value in assignments.items()]
    return "\n".join([*exports, *(line for line in dry.stdout.splitlines() if line.strip())])
