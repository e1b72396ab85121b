"""File patterns: comma-separated globs over any fsspec filesystem (local, gs://, s3://, memory://)."""

from __future__ import annotations

import fsspec

from compactvid.errors import DataError


def expand_pattern(pattern: str) -> list[str]:
    """The sorted, de-duplicated union of the files matched by each comma-separated glob in `pattern`.

    Paths keep their protocol (``gs://bucket/x``), so they can be opened with `fsspec.open`.
    Raises DataError naming the part that matches no file (training on part of the data because one
    glob was mistyped would go unnoticed), or that names a directory.
    """
    parts = [p.strip() for p in pattern.split(",") if p.strip()]
    if not parts:
        raise DataError(f"the pattern {pattern!r} names no file; give a glob such as 'data/train*.tfrecord'")
    files: set[str] = set()
    for part in parts:
        matches = _expand_part(part, pattern)
        if not matches:
            where = (f" (part of the pattern {pattern!r}: each comma-separated glob must match a file)"
                     if part != pattern.strip() else "")
            raise DataError(f"no file matches {part!r}{where}; check the path and the glob")
        files.update(matches)
    return sorted(files)


def _expand_part(part: str, pattern: str) -> list[str]:
    """The files one glob of `pattern` matches; DataError when the glob is a directory or cannot be listed."""
    try:
        fs, path = fsspec.core.url_to_fs(part)
        if not fsspec.core.has_magic(path) and fs.isdir(path):
            raise DataError(f"{part!r} is a directory, not a file pattern; did you mean "
                            f"'{part.rstrip('/')}/*.tfrecord'?")
        matches = fs.glob(path) if fsspec.core.has_magic(path) else ([path] if fs.exists(path) else [])
        return [fs.unstrip_protocol(m) if "://" in part else m for m in matches if not fs.isdir(m)]
    except (ImportError, ValueError, OSError) as error:
        raise DataError(f"cannot list {part!r} (from the pattern {pattern!r}): {error}") from None
