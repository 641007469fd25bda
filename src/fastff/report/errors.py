"""The report's one error type: a user mistake, printed as one line (exit status 2)."""

from __future__ import annotations


class ReportError(Exception):
    """Bad input to the report (a missing source, no runs, mixed experiments in one table).

    The message is one line that names the problem and what is allowed; the command line prints
    it as ``error: <message>`` and exits with status 2.
    """
