"""mixfleet's exception hierarchy.

Every error a user can cause is a :class:`MixfleetError`. Its message says
what is wrong (naming the bad value) and its ``hint`` says what to do next.
The CLI prints ``error: <message>; <hint>`` on one line and exits non-zero;
library users catch the type. ``assert`` is kept for internal invariants.

Servers answer with the same types: :data:`WIRE` is the one table from an
exception class to its HTTP status, ``Retry-After`` and gRPC status code,
and :func:`http_error` / :func:`grpc_error` apply it (both serving parts use
them). Every exception class in mixfleet derives from :class:`MixfleetError`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass


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

    def __reduce__(self):  # crosses Ray process boundaries with every field (hint, retry_after_s, ...)
        return (_restore, (type(self), self.message, dict(self.__dict__)))


def _restore(cls: type, message: str, state: dict) -> MixfleetError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


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


class ServingError(MixfleetError):
    """A server refused a request or could not finish it; ``retry_after_s`` says when to try again."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, retry_after_s: float | None = None):
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


class Overloaded(ServingError):
    """Too much work in flight (server-wide or on one replica): retry after ``retry_after_s``."""


class Unavailable(ServingError):
    """No replica can take the request now (all busy, down or failing)."""


class NotFound(ServingError):
    """The request names something this server does not serve (a model, an app)."""


class PayloadTooLarge(InputError):
    """A request body above the server's limit."""


@dataclass(frozen=True)
class Wire:
    """How a server answers an error: HTTP status, whether to send Retry-After, gRPC status code name."""

    http_status: int
    grpc_code: str  # a grpc.StatusCode member name
    retry_after: bool = False


# The one table (the most specific class of an exception wins; anything else is a 500 / INTERNAL).
WIRE: dict[type[Exception], Wire] = {
    PayloadTooLarge: Wire(413, "INVALID_ARGUMENT"),
    InputError: Wire(400, "INVALID_ARGUMENT"),
    NotFound: Wire(404, "NOT_FOUND"),
    Overloaded: Wire(429, "RESOURCE_EXHAUSTED", retry_after=True),
    Unavailable: Wire(503, "UNAVAILABLE", retry_after=True),
    MixfleetError: Wire(500, "INTERNAL"),
}


def wire(exc: BaseException) -> Wire:
    """The :data:`WIRE` row for ``exc`` (by its most specific class)."""
    for cls in type(exc).__mro__:
        if cls in WIRE:
            return WIRE[cls]
    return Wire(500, "INTERNAL")


def retry_after(exc: BaseException) -> str | None:
    """The ``Retry-After`` value (whole seconds, at least 1) if the table says to send one, else None."""
    if not wire(exc).retry_after:
        return None
    return str(max(1, math.ceil(getattr(exc, "retry_after_s", None) or 1.0)))


def error_text(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, MixfleetError) else str(exc)


def http_error(exc: BaseException) -> tuple[int, dict[str, str]]:
    """HTTP status and headers for ``exc`` (the body's shape is the server's own)."""
    after = retry_after(exc)
    return wire(exc).http_status, ({"Retry-After": after} if after else {})


def grpc_error(context, exc: BaseException) -> None:
    """Set ``context``'s code, details and ``retry-after`` trailer for ``exc`` (no-op without a context)."""
    if context is None:
        return
    import grpc

    context.set_code(getattr(grpc.StatusCode, wire(exc).grpc_code))
    after = retry_after(exc)
    context.set_details(error_text(exc) + (f"; retry after {after} s" if after else ""))
    if after:
        context.set_trailing_metadata([("retry-after", after)])


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
