"""Command-line flags in the original's syntax, built from `Config` (and the seed's flags with no effect).

Accepted forms, as TensorFlow's (absl) flags accepted them: ``--flag=value``, ``--flag value``, for
booleans also ``--flag`` (true), ``--noflag`` (false) and the values True/False/true/false/1/0.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _value_type(f: dataclasses.Field) -> type:
    """The scalar type of a Config field, unwrapping Optional[...]."""
    hint = typing.get_type_hints(Config)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _add_flag(group: argparse._ArgumentGroup, name: str, kind: type, help_text: str) -> None:
    """One flag; unset, it stays absent from the namespace."""
    if kind is bool:
        group.add_argument(f"--{name}", nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS,
                           metavar="BOOL", help=help_text)
        group.add_argument(f"--no{name}", dest=name, action="store_false", default=argparse.SUPPRESS,
                           help=argparse.SUPPRESS)
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
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_flags(parser, groups)
    try:
        namespace = parser.parse_args(list(argv))
    except SystemExit as exit_:
        raise ConfigError(f"invalid flags: {' '.join(argv)}") from exit_
    return config_from_namespace(namespace)

