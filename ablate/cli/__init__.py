"""The `ablate` command line: one module per command group, one console. User errors print one line and
exit 2; bugs keep their traceback.

    registry  list, describe, inspect      run      run, sample
    compare   compare                      ui       ui
    study     study run|worker|status|report|show
    bench     bench mixers|attention       export   export RUN --to hf DIR
"""

from __future__ import annotations

import argparse
import os
import sys

from ablate.cli import bench, compare, export, registry, run, study, ui
from ablate.cli.console import OutlivesItsReader, console
from ablate.errors import AblateError

__all__ = ["build_parser", "console", "main"]

GROUPS = (registry, run, compare, ui, study, bench, export)


def version() -> str:
    """The installed distribution's version (a source tree that is not installed says so)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ablate")
    except PackageNotFoundError:
        return "(not installed)"


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``ablate: error: <problem> (see ablate <cmd> --help)``, exit 2."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        if message.endswith("expected one argument"):  # argparse reads a value like -5steps as a flag
            message += "; a value that starts with '-' is written --flag=VALUE"
        self.exit(2, f"ablate: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ablate", description="architecture ablations for GPT-style models")
    parser.add_argument("--version", action="version", version=f"ablate {version()}")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="load a local plugin file (repeatable); installed plugins load automatically "
                             "unless ABLATE_NO_PLUGINS=1")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def _out_of_memory(err: RuntimeError) -> bool:
    """Whether ``err`` is torch failing to allocate (CPU or GPU memory)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err)
    return any(s in text for s in ("can't allocate memory", "not enough memory", "CUDA out of memory",
                                   "CUDA error: out of memory", "MPS backend out of memory"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout, stderr = sys.stdout, sys.stderr
    if not isinstance(stdout, OutlivesItsReader) and not stdout.isatty():
        sys.stdout = OutlivesItsReader(stdout)
    if not isinstance(stderr, OutlivesItsReader) and not stderr.isatty():  # `ablate run 2>&1 | head`
        sys.stderr = OutlivesItsReader(stderr)
    try:
        from ablate.plugins import load_file

        for path in args.plugin:
            load_file(path)
        if getattr(args, "tracking_uri", None):  # every command's --tracking-uri, checked in one place
            from ablate.urls import check_tracking_uri

            check_tracking_uri(args.tracking_uri)
        return args.func(args) or 0
    except AblateError as err:
        from ablate.urls import redact_text

        message = " ".join(redact_text(str(err)).split())  # one line, never a password
        if os.environ.get("LOCAL_RANK", "0") == "0":  # under torchrun, once per machine, not once per process
            print(f"ablate: error: {message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as err:  # torch.OutOfMemoryError too: the sizes asked for do not fit the device
        if "Could not determine home directory" in str(err):  # Path.expanduser() of "~nosuchuser/..."
            print("ablate: error: a path starts with ~user for a user this machine does not know; write the "
                  "folder in full", file=sys.stderr)
            return 2
        if not _out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or ["out of memory"])[0]
        first = first[max(first.find("DefaultCPUAllocator"), 0):][:200]  # not c10's "[enforce fail at ...] err == 0."
        if os.environ.get("LOCAL_RANK", "0") == "0":  # under torchrun, once per machine
            print(f"ablate: error: out of memory ({first}); make the work smaller (batch size, context, width or "
                  "layers) or use a device with more memory", file=sys.stderr)
        return 2
    finally:
        sys.stdout.flush()  # a closed pipe is dropped here too, not at exit
        sys.stderr.flush()
        sys.stdout, sys.stderr = stdout, stderr
