"""File patterns: every comma-separated glob must match, and a directory is named as such."""

import pytest

from compactvid.cli import main
from compactvid.data.paths import expand_pattern
from compactvid.errors import DataError


def _files(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    return [str(tmp_path / name) for name in names]


def test_union_of_globs(tmp_path):
    train, validate = _files(tmp_path, "train0.tfrecord", "validate0.tfrecord")
    assert expand_pattern(f"{tmp_path}/train*.tfrecord, {tmp_path}/validate*") == [train, validate]


def test_a_part_that_matches_nothing_is_an_error_naming_it(tmp_path):
    _files(tmp_path, "train0.tfrecord")
    pattern = f"{tmp_path}/train*.tfrecord,{tmp_path}/validat*.tfrecord"
    with pytest.raises(DataError) as info:
        expand_pattern(pattern)
    assert str(info.value).startswith(f"no file matches '{tmp_path}/validat*.tfrecord' (part of the pattern")


def test_a_directory_is_named_and_a_glob_suggested(tmp_path, capsys):
    with pytest.raises(DataError, match=f"'{tmp_path}/' is a directory, not a file pattern; did you mean "
                                        f"'{tmp_path}/\\*.tfrecord'"):
        expand_pattern(f"{tmp_path}/")
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"did you mean '{tmp_path}/*.tfrecord'?" in err
