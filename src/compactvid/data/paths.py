"""File patterns: comma-separated globs over any fsspec filesystem (local, gs://, s3://, memory://)."""

from __future__ import annotations

import fsspec

from compactvid.errors import DataError


def expand_pattern(pattern: str) -> list[str]:
    """The sorted, de-duplicated union of the files matched by each comma-separated glob in `pattern`.

    Paths keep their protocol (``gs://bucket/x``), so they can be opened with `fsspec.open`.
    Raises DataError naming the pattern when nothing matches.
    """
    files: set[str] = set()
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        try:
            fs, path = fsspec.core.url_to_fs(part)
            matches = fs.glob(path) if fsspec.core.has_magic(path) else ([path] if fs.exists(path) else [])
            files.update(fs.unstrip_protocol(m) if "://" in part else m
                         for m in matches if not fs.isdir(m))
        except (ImportError, ValueError, OSError) as error:
            raise DataError(f"cannot list {part!r} (from the pattern {pattern!r}): {error}") from None
    if not files:
        raise DataError(f"no file matches the pattern {pattern!r}; check the path and the glob "
                        f"(comma-separated globs are a union)")
    return sorted(files)
