"""The `compactvid` entry point: help texts, dispatch, and one-line errors."""

import json
import subprocess
import sys

import pytest

from compactvid.cli import COMMANDS, build_subcommand_parser, main
from tiny_dataset import AUDIO, RGB, TINY_FLAGS, train_tiny_run


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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train_tiny_run(str(root / "run"), str(root / "data"))
    return {"dir": str(root / "run"), "validate": str(root / "data" / "validate*.tfrecord")}


# every subcommand with --json, and the rest of a command line that makes it write its JSON
JSON_COMMANDS = {
    "eval": lambda run: [f"--train_dir={run['dir']}", f"--eval_data_pattern={run['validate']}", "--run_once"],
    "inspect": lambda run: [run["validate"], f"--feature_sizes={RGB},{AUDIO}"],
    "export": lambda run: [f"--train_dir={run['dir']}", f"--output={run['dir']}.onnx"],
    "params": lambda run: TINY_FLAGS,
}


def test_the_json_table_names_every_subcommand_with_json():
    with_json = {name for name in COMMANDS if "--json" in build_subcommand_parser(name)[1]._option_string_actions}
    assert with_json == set(JSON_COMMANDS)


@pytest.mark.parametrize("name", sorted(JSON_COMMANDS))
def test_json_to_stdout_is_the_whole_stdout(tiny_run, name):
    result = run_cli(name, *JSON_COMMANDS[name](tiny_run), "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_a_misspelled_flag_is_one_line_with_the_closest_flag():
    result = run_cli("train", "--batchsize=80")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "unknown flag --batchsize (did you mean --batch_size?)" in result.stderr


def test_a_missing_flag_is_one_line():
    result = run_cli("eval", "--run_once")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--eval_data_pattern" in result.stderr


@pytest.mark.parametrize("flags,value", [
    (["--skip_corrupt_records"], True), (["--skip_corrupt_records", "false"], False),
    (["--noskip_corrupt_records"], False), ([], False)])
def test_a_boolean_flag_leaves_the_positional_argument_alone(flags, value):
    _, parser = build_subcommand_parser("inspect")
    args = parser.parse_args([*flags, "data/train*.tfrecord"])
    assert args.pattern == "data/train*.tfrecord" and args.skip_corrupt_records is value


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["train", "--train_dir=RUN", "--train_data_pattern=DATA", "--device=cuda"],
    ["eval", "--train_dir=RUN", "--eval_data_pattern=DATA", "--device=cuda", "--run_once"],
    ["inference", "--train_dir=RUN", "--input_data_pattern=DATA", "--output_file=OUT", "--device=cuda"],
], ids=lambda argv: argv[0])
def test_a_bad_device_gets_the_same_error_from_every_command(argv, tmp_path, capsys):
    """One `resolve_device`: train, eval and inference word --device=cuda without a GPU alike."""
    argv = [word.replace("RUN", str(tmp_path / "run")).replace("DATA", str(tmp_path / "*.tfrecord"))
            .replace("OUT", str(tmp_path / "out.csv")) for word in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"compactvid {argv[0]}: error: --device=cuda but PyTorch sees no CUDA GPU; use --device=cpu or auto"
