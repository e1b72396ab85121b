"""The package's exceptions.

Every problem caused by the user's input (data files, flags, checkpoints) is raised as a
`CompactVidError`; the CLI prints its message on one line and exits non-zero, without a traceback.
Messages name the file, record or flag at fault and, where there is one, the fix.
"""


class CompactVidError(Exception):
    """Base class of every error the package raises on bad input."""


class DataError(CompactVidError):
    """A data file is missing, unreadable, corrupt, or not in the YouTube-8M format."""


class ConfigError(CompactVidError):
    """A flag value is invalid, or flags contradict each other or a saved run."""


class CheckpointError(CompactVidError):
    """A checkpoint is missing, unreadable, or does not match the model."""


class RunDirError(CompactVidError):
    """A --train_dir cannot hold this run: another program's directory, a run in use, unwritable, or full."""
