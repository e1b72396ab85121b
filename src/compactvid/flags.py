"""Command-line flags in the original's syntax, built from `Config` (and the seed's flags with no effect),
and the parser that reads them.

Accepted forms, as TensorFlow's (absl) flags accepted them: ``--flag=value``, ``--flag value``, for
booleans also ``--flag`` (true), ``--noflag`` (false) and the values True/False/true/false/1/0. A boolean
flag takes the next word as its value only when that word is a boolean (True/False/...): ``inspect
--skip_corrupt_records PATTERN`` leaves PATTERN to be the pattern. A bad command line is one line
naming the flag (with the closest known flag for a misspelled one), not the usage of 80 flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import typing
from typing import Sequence

from compactvid.config import Config, fields_in_group
from compactvid.errors import ConfigError
from compactvid.ignored_flags import IGNORED_FLAGS

log = logging.getLogger(__name__)

# Other spellings of a flag that the originals' scripts use: TensorFlow's flags of their time parsed with
# argparse, which takes any unambiguous prefix, and NeXtVLAD's training script passes --max_step.
ALIASES = {"max_steps": ("max_step",)}

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def parse_bool(text: str) -> bool:
    """Parse a boolean flag value the way absl does (True/False/true/false/1/0)."""
    lowered = str(text).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_bool_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, default: bool | None,
                  help: str, dest: str | None = None) -> None:
    """Add the boolean flag ``--name`` (``--name``, ``--name=VALUE``, ``--name VALUE``) and its negation
    ``--noname``, as absl defines every boolean flag. `default` argparse.SUPPRESS leaves it absent when unset."""
    dest = dest or name
    parser.add_argument(f"--{name}", dest=dest, nargs="?", const=True, type=parse_bool, default=default,
                        metavar="BOOL", help=help)
    parser.add_argument(f"--no{name}", dest=dest, action="store_false", default=default, help=argparse.SUPPRESS)


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser that reads boolean flags as absl does (module docstring) and reports a bad command
    line in one line: the problem, the closest flag to an unknown one, and where the flags are listed."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """Parse `args`, the words the caller gives (cli.py passes them: only it knows about sys.argv)."""
        return super().parse_known_args(self._explicit_bool_values(list(args or ())), namespace)

    def _explicit_bool_values(self, args: list[str]) -> list[str]:
        """`args` with each boolean flag written ``--flag=VALUE``: a following word is its value only when
        it is a boolean, so a positional argument after the flag stays positional."""
        boolean = {option for action in self._actions if action.type is parse_bool for option in action.option_strings}
        out: list[str] = []
        words = iter(range(len(args)))
        for i in words:
            word = args[i]
            if word == "--":
                out.extend(args[i:])
                break
            if word not in boolean:
                out.append(word)
                continue
            following = args[i + 1] if i + 1 < len(args) else None
            if following is not None and following.strip().lower() in _TRUE | _FALSE:
                out.append(f"{word}={following}")
                next(words)
            else:
                out.append(f"{word}=true")
        return out

    def error(self, message: str):  # type: ignore[override]
        if message.startswith("unrecognized arguments: "):
            message = "; ".join(self._unknown_flag(word) for word in message.split(": ", 1)[1].split())
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")

    def _unknown_flag(self, word: str) -> str:
        """'unknown flag --x (did you mean --y?)' for one word argparse did not recognize."""
        if not word.startswith("-"):
            return f"unexpected argument {word!r}"
        flag = word.split("=", 1)[0]
        close = difflib.get_close_matches(flag, list(self._option_string_actions), n=1)
        return f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else "")


def _value_type(f: dataclasses.Field) -> type:
    """The scalar type of a Config field, unwrapping Optional[...]."""
    hint = typing.get_type_hints(Config)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _add_flag(group: argparse._ArgumentGroup, name: str, kind: type, help_text: str) -> None:
    """One flag; unset, it stays absent from the namespace."""
    if kind is bool:
        add_bool_flag(group, name, argparse.SUPPRESS, help_text)
    else:
        spellings = [f"--{spelling}" for spelling in (name, *ALIASES.get(name, ()))]
        group.add_argument(*spellings, dest=name, type=kind, default=argparse.SUPPRESS,
                           metavar=kind.__name__.upper(), help=help_text)


def add_config_flags(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    """Add one flag per Config field of the given groups (``ignored``: the seed's flags with no effect)."""
    titles = {"data": "data", "model": "model (a resumed run must keep these)", "train": "training",
              "ignored": "flags of the original with no effect here (accepted, with a note)"}
    for group in groups:
        arg_group = parser.add_argument_group(titles[group])
        if group == "ignored":
            for name, flag in IGNORED_FLAGS.items():
                _add_flag(arg_group, name, type(flag.default), f"{flag.note} (default: {flag.default})")
            continue
        for f in fields_in_group(group):
            _add_flag(arg_group, f.name, _value_type(f), f"{f.metadata['help']} (default: {f.default})")


def config_from_namespace(namespace: argparse.Namespace) -> tuple[Config, set[str]]:
    """Build a Config from parsed flags. Returns it and the names of the flags given explicitly.

    The seed's flags with no effect that were given are reported once each in the log, then dropped.
    """
    for name, flag in IGNORED_FLAGS.items():
        if name in vars(namespace):
            log.warning("--%s has no effect in compactvid: %s", name, flag.note)
    names = {f.name for f in dataclasses.fields(Config)}
    given = {k: v for k, v in vars(namespace).items() if k in names}
    config = Config(**given)
    config.validate()
    return config, set(given)


def parse_config(argv: Sequence[str], groups: Sequence[str] = ("data", "model", "train", "ignored")
                 ) -> tuple[Config, set[str]]:
    """Parse a command line of Config flags alone (handy in tests and scripts)."""
    parser = FlagParser(allow_abbrev=False)
    add_config_flags(parser, groups)
    try:
        namespace = parser.parse_args(list(argv))
    except SystemExit as exit_:
        raise ConfigError(f"invalid flags: {' '.join(argv)}") from exit_
    return config_from_namespace(namespace)

