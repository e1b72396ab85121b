"""Which CRC32C package lets the loader decode a checked record fastest: `crc32c` against `google-crc32c`.

The loader checks a record's payload CRC just before decoding it, so that the record is in the CPU cache
for what follows: the compiled scan of its frames (`compactvid.data.wire`) and the gather of the sampled
ones (`compactvid.data.sampling`). How much of the record a CRC leaves in the cache depends on how the
package reads memory, so this times, per video, the CRC alone and the decoding after it, with each
package in turn on the same files (the seed's sampling: 2 examples x 10 bags x 15 frames), best of
`--repeats` passes, plus the decoding after no CRC at all (a cold record) as the reference.

Usage (google-crc32c is not a dependency of compactvid: install it to compare):
    pip install google-crc32c
    python benchmarks/bench_crc.py --data_pattern '/tmp/bench_yt8m/*.tfrecord' --json bench-out/crc.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import crc32c
import numpy as np

from compactvid.data.paths import expand_pattern
from compactvid.data.sampling import gather_sampled_frames
from compactvid.data.tfrecord import iter_records
from compactvid.data.yt8m import RecordDecoder


def measure(files: list[str], crc: Callable[[memoryview], int] | None) -> dict[str, float]:
    """Microseconds per video of `crc` and of decoding + sampling + gathering after it, in one pass."""
    decoder = RecordDecoder(max_frames=300)
    staged = np.empty((2, 10, 15, decoder.dim), dtype=np.uint8)
    rng = np.random.default_rng(0)
    crc_seconds = decode_seconds = 0.0
    videos = 0
    for path in files:
        for record in iter_records(path, defer_payload_check=True):
            start = time.perf_counter()
            if crc is not None:
                crc(record.payload)
            checked = time.perf_counter()
            video = decoder.decode_frames(record)
            half = video.num_frames // 2
            gather_sampled_frames(staged, video.buffer, video.offsets, video.strides, video.sizes,
                                  video.num_frames, rng.random((2, 10, 15)), (0, half), (half, half), 15, True)
            done = time.perf_counter()
            crc_seconds += checked - start
            decode_seconds += done - checked
            videos += 1
    return {"crc_us": crc_seconds / videos * 1e6, "decode_after_us": decode_seconds / videos * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_pattern", required=True, help="frame-level TFRecord files (rgb 1024, audio 128)")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each package, taking turns; the best is kept")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    files = expand_pattern(args.data_pattern)
    packages: dict[str, Callable | None] = {"crc32c": crc32c.crc32c, "none (cold record)": None}
    try:
        import google_crc32c
        packages["google-crc32c"] = lambda payload: google_crc32c.value(np.frombuffer(payload, np.uint8))
    except ImportError:
        print("google-crc32c is not installed: `pip install google-crc32c` to compare with it")
    measure(files, crc32c.crc32c)  # page cache, compiled kernels
    results = {name: {"crc_us": float("inf"), "decode_after_us": float("inf")} for name in packages}
    for _ in range(args.repeats):  # in turns, so that a change of load on the machine affects all alike
        for name, crc in packages.items():
            for key, value in measure(files, crc).items():
                results[name][key] = round(min(results[name][key], value), 1)
    print(f"{'CRC package':<20} {'CRC us/video':>13} {'decode after, us/video':>23} {'total':>7}")
    for name, row in results.items():
        print(f"{name:<20} {row['crc_us']:>13.1f} {row['decode_after_us']:>23.1f} "
              f"{row['crc_us'] + row['decode_after_us']:>7.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "files": len(files), "repeats": args.repeats,
                                               "machine": {"processor": platform.processor() or platform.machine()}},
                                              indent=2))


if __name__ == "__main__":
    main()
