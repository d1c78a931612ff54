"""The ``mixfleet`` command line: ``mixfleet <part> <verb>``.

Parts are loaded lazily: ``mixfleet --help`` and ``mixfleet cluster ...``
never import torch, Pyomo or the other parts. Every user error ends as one
``error: ...`` line on stderr and a non-zero exit; with ``--json`` stdout
carries exactly one JSON object (anything else printed goes to stderr).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading

import typer

from mixfleet import __version__
from mixfleet.errors import MixfleetError, did_you_mean

try:  # typer >= 0.20 vendors its own click: its exceptions come from there
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exc

# name -> (module holding a typer app called `app`, one-line help)
PARTS: dict[str, tuple[str, str]] = {
    "cluster": ("mixfleet.platform.cli", "Validate, emulate, launch and inspect Ray clusters."),
    "mapreduce": ("mixfleet.mapreduce.cli", "Run MapReduce jobs on Ray actors."),
    "routing": ("mixfleet.routing.cli", "Simulate, plan and serve heterogeneity-aware LLM routing."),
    "earlyexit": ("mixfleet.earlyexit.cli", "Train, calibrate, benchmark and serve early-exit models."),
    "xfaas": ("mixfleet.xfaas.cli", "Run, plan and benchmark cross-cloud serverless workflows."),
    "demo": ("mixfleet.demo", "Run the end-to-end demo on an embedded local Ray."),
}

USAGE = "usage: mixfleet [--version] [--help] [--verbose] <command> [ARGS]..."


def _top_help() -> str:
    lines = ["mixfleet: compute and serving on mixed GPU fleets, on Ray.", "", USAGE, "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in PARTS.items()]
    lines += ["", "--verbose (or MIXFLEET_LOG=debug) shows Ray's, Serve's and Ray Data's own logs, which are",
              "off by default.", "", "Run 'mixfleet <command> --help' for a command's options."]
    return "\n".join(lines)


# Seconds a command has to wind down after SIGINT/SIGTERM before the process leaves anyway.
GRACE_S = 8.0


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: raised in the main thread wherever it is (exit 128 + signal)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


_leaving = threading.Lock()  # held by whichever of the main thread and the watchdog leaves first


def _hard_exit(signum: int) -> None:
    if not _leaving.acquire(blocking=False):
        return  # already leaving (the other thread, or an outer frame): one "error: interrupted" line only
    try:
        os.write(2, b"error: interrupted\n")
    finally:
        os._exit(128 + signum)


_received: list[int] = []  # the signals seen, in order (ray.get re-raises ours as a plain KeyboardInterrupt)


def _on_signal(signum: int, _frame) -> None:
    if _received:  # a second signal: leave now
        _hard_exit(signum)
        return
    _received.append(signum)
    raise Interrupted(signum)


def _watchdog(read_fd: int) -> None:
    """Sees every signal even while the main thread is blocked in C (Ray's connect, ``ray.get``).

    If the command still runs ``GRACE_S`` after the first SIGINT/SIGTERM, or a
    second one arrives, the process exits with ``128 + signal``. Commands that
    install their own handler (a server's orderly stop) are left alone.
    """
    count = 0
    while True:
        try:
            data = os.read(read_fd, 16)
        except OSError:
            return
        for signum in data:
            if signum not in (signal.SIGINT, signal.SIGTERM) or signal.getsignal(signum) is not _on_signal:
                continue
            count += 1
            if count >= 2:
                _hard_exit(signum)
            timer = threading.Timer(GRACE_S, _hard_exit, args=(signum,))
            timer.daemon = True
            timer.start()


def install_signal_handlers() -> None:
    """SIGTERM takes the same path as Ctrl-C: :class:`Interrupted` in the main thread, then a bounded exit."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watchdog, args=(read_fd,), name="mixfleet-signals", daemon=True).start()


def _run_part(name: str, args: list[str]) -> int:
    module = importlib.import_module(PARTS[name][0])
    command = typer.main.get_command(module.app)
    # make_context + invoke rather than command.main: click would turn EOFError and Ctrl-C into a
    # blank line plus a generic abort; here they reach main() as they are.
    try:
        with command.make_context(f"mixfleet {name}", list(args)) as ctx:
            rv = command.invoke(ctx)
    except typer.Exit as exc:
        return exc.exit_code
    return rv if isinstance(rv, int) else 0


def _dispatch(args: list[str]) -> int:
    if "--verbose" in args:  # global: anywhere on the line, before or after the command
        from mixfleet.platform import logs

        args = [a for a in args if a != "--verbose"]
        logs.set_verbose(True)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_top_help())
        return 0
    if args[0] == "--version":
        print(f"mixfleet {__version__}")
        return 0
    name = args[0]
    if name not in PARTS:
        raise MixfleetError(f"unknown command '{name}'{did_you_mean(name, PARTS)}",
                            f"commands: {', '.join(PARTS)} (see 'mixfleet --help')")
    return _run_part(name, args[1:])


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        install_signal_handlers()
    json_mode = "--json" in args
    redirect = contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()
    code = 0
    try:
        with redirect:
            code = _dispatch(args)
    except MixfleetError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        code = exc.exit_code
    except click_exc.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "mixfleet"
        what = exc.format_message() or "missing a command"  # no arguments: the help went to stdout
        print(" ".join(f"error: {what} (see '{where} --help')".split()), file=sys.stderr)
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt) as exc:
        print("error: interrupted", file=sys.stderr)
        code = 128 + getattr(exc, "signum", _received[0] if _received else signal.SIGINT)
    except click_exc.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        code = exc.exit_code
    sys.stdout.flush()
    sys.exit(code)
