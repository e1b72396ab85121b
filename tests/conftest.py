"""Shared test fixtures."""

import os
from pathlib import Path

# The data layer's compiled kernels (numba) do not check indices; under test they do, so that a fuzzed
# record that made one read outside its buffer fails the test (IndexError) instead of passing unseen.
# Bound-checked builds get a cache of their own, apart from the one normal runs use.
os.environ.setdefault("NUMBA_BOUNDSCHECK", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "numba"))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and leave the other core to the rest of the machine: threads
    only add OpenMP/MKL synchronization, which on a busy machine stalls for milliseconds per call (and MKL's
    dynamic threading re-sizes its team at each FFT). Results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where PyTorch sees no CUDA GPU (benchmarks/gpu_check.py runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
