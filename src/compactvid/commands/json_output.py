"""The `--json` output of the subcommands: one flag, and stdout holding the JSON alone.

With ``--json`` (no PATH) the JSON goes to stdout, so a script can read it whole with one ``json.loads``:
while such a subcommand runs, `reserve_stdout` points ``sys.stdout`` at stderr, so that every human line
(its own and any library's) lands there, and `write_json` writes to the real stdout. With
``--json=PATH`` the JSON goes to PATH and the human lines stay on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, Iterator

STDOUT = "-"  # the value of --json given without PATH

_json_stream = None  # the real stdout while `reserve_stdout` holds it


def add_json_flag(parser: argparse.ArgumentParser, what: str, *, path: bool = True) -> None:
    """``--json`` writes `what` as JSON to stdout; with `path`, ``--json=PATH`` writes it to PATH instead.

    Subcommands with a positional argument take no PATH (``--json PATTERN`` would swallow the pattern).
    """
    if path:
        parser.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="PATH",
                            help=f"write {what} as JSON to PATH, or to stdout without PATH (then stdout holds "
                                 f"only the JSON and human lines go to stderr)")
    else:
        parser.add_argument("--json", action="store_const", const=STDOUT, default=None,
                            help=f"write {what} as JSON to stdout (which then holds only the JSON; human lines "
                                 f"go to stderr)")


@contextlib.contextmanager
def reserve_stdout(args: argparse.Namespace) -> Iterator[None]:
    """While a subcommand runs with ``--json`` to stdout, stdout is for `write_json` alone (module docstring)."""
    global _json_stream
    if getattr(args, "json", None) != STDOUT:
        yield
        return
    _json_stream, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout, _json_stream = _json_stream, None


def write_json(value: Any, destination: str) -> None:
    """`value` as one line of JSON to stdout (`destination` STDOUT) or, atomically, to the file `destination`.

    Written to stdout several times (e.g. `eval` watching a run), the output is JSON Lines.
    """
    text = json.dumps(value) + "\n"
    if destination == STDOUT:
        stream = _json_stream if _json_stream is not None else sys.stdout
        stream.write(text)
        stream.flush()
        return
    from compactvid.checkpoint import write_text_atomically  # imports torch: only when a file is written

    write_text_atomically(destination, text)
