"""mixfleet's exception hierarchy.

Every error a user can cause is a :class:`MixfleetError`. Its message says
what is wrong (naming the bad value) and its ``hint`` says what to do next.
The CLI prints ``error: <message>; <hint>`` on one line and exits non-zero;
library users catch the type. ``assert`` is kept for internal invariants.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MixfleetError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as one line, as the CLI prints it."""
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(MixfleetError):
    """A config file (YAML/JSON) is missing, malformed or invalid."""


class InputError(MixfleetError):
    """A command-line argument or API input is invalid."""


class ClusterError(MixfleetError):
    """Ray could not be reached or the cluster is not in the expected shape."""


class JobError(MixfleetError):
    """A user job (MapReduce, workflow) failed while running."""

    exit_code = 1


class SolverError(MixfleetError):
    """An optimisation model could not be solved (infeasible, solver missing)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> InputError:
    """The standard registry miss: names the bad value and lists the valid ones."""
    valid = sorted(valid)
    return InputError(
        f"unknown {kind} '{name}'{did_you_mean(name, valid)}",
        f"valid {kind}s: {', '.join(valid)}",
    )


def first_line(exc: BaseException) -> str:
    """The first line of ``str(exc)``, or the exception's type name when it has no text."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
