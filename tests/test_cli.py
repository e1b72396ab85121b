"""The `compactvid` entry point: help texts, dispatch, and one-line errors."""

import subprocess
import sys

import pytest

from compactvid.cli import COMMANDS, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "compactvid.cli", *args], capture_output=True, text=True)


def test_top_level_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_useful_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"compactvid {name}" in out
    assert len(out.splitlines()) > 5, f"`compactvid {name} --help` says too little:\n{out}"


def test_unknown_subcommand_is_a_usage_error():
    result = run_cli("frobnicate")
    assert result.returncode != 0
    assert "invalid choice" in result.stderr
