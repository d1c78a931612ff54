"""The ``mixfleet`` command line: ``mixfleet <part> <verb>``.

Parts are loaded lazily: ``mixfleet --help`` and ``mixfleet cluster ...``
never import torch, Pyomo or the other parts. Every user error ends as one
``error: ...`` line on stderr and a non-zero exit; with ``--json`` stdout
carries exactly one JSON object (anything else printed goes to stderr).
"""

from __future__ import annotations

import contextlib
import importlib
import sys

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


def _run_part(name: str, args: list[str]) -> int:
    module = importlib.import_module(PARTS[name][0])
    command = typer.main.get_command(module.app)
    rv = command.main(args=args, prog_name=f"mixfleet {name}", standalone_mode=False)
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
        print(" ".join(f"error: {exc.format_message()} (see '{where} --help')".split()), file=sys.stderr)
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        code = 130
    except click_exc.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        code = exc.exit_code
    sys.stdout.flush()
    sys.exit(code)
