"""What reading the segment ratings (2019 release) adds to decoding a frame-level record.

The compiled scan (`compactvid.data.wire`) locates a record's frames, id and labels and skips the segment
fields; with `RecordDecoder(segments=True)` the context (a few hundred bytes) is then also decoded by the
protobuf library and the three lists checked (`compactvid.data.segments`). This times `decode_frames` per
record, without and with segments, taking turns on the same in-memory records (300 frames of rgb 1024 +
audio 128 bytes, 3 labels, 5 rated (segment, class) pairs as in the 2019 validate files), best of
`--repeats` passes; and the share of records that took the compiled path.

Usage:
    python benchmarks/bench_segments.py --json bench-out/segments.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from compactvid.data import proto
from compactvid.data.tfrecord import Record
from compactvid.data.wire import frame_layout, scan_sequence_example
from compactvid.data.yt8m import RecordDecoder


def make_records(count: int, seed: int = 0) -> list[Record]:
    """`count` 2019-style frame-level records, held in memory."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        starts = np.sort(rng.choice(60, 5, replace=False)) * 5
        context = {"id": f"v{index:04d}".encode(), "labels": sorted(rng.choice(3862, 3, replace=False).tolist()),
                   "segment_start_times": starts.tolist(), "segment_labels": rng.integers(0, 3862, 5).tolist(),
                   "segment_scores": rng.integers(0, 2, 5).astype(np.float32)}
        lists = {"rgb": [bytes(f) for f in rng.integers(0, 256, (300, 1024), dtype=np.uint8)],
                 "audio": [bytes(f) for f in rng.integers(0, 256, (300, 128), dtype=np.uint8)]}
        payload = proto.make_sequence_example(context, lists).SerializeToString()
        records.append(Record("memory", index, 0, memoryview(payload)))
    return records


def measure(records: list[Record], decoder: RecordDecoder) -> float:
    """Microseconds per record of `decoder.decode_frames`."""
    start = time.perf_counter()
    for record in records:
        decoder.decode_frames(record)
    return (time.perf_counter() - start) / len(records) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200, help="records per pass (default: 200)")
    parser.add_argument("--repeats", type=int, default=7, help="passes of each reader, taking turns; best kept")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    records = make_records(args.records)
    layout = frame_layout(("rgb", "audio"), (1024, 128))
    compiled = sum(scan_sequence_example(np.frombuffer(r.payload, np.uint8), layout, 3862) is not None
                   for r in records)
    decoders = {"frames, id, labels": RecordDecoder(num_classes=3862),
                "+ segment ratings": RecordDecoder(num_classes=3862, segments=True)}
    for decoder in decoders.values():
        measure(records, decoder)  # compiled kernels, caches
    best = {name: float("inf") for name in decoders}
    for _ in range(args.repeats):  # in turns, so that a change of load affects both alike
        for name, decoder in decoders.items():
            best[name] = min(best[name], measure(records, decoder))
    print(f"records on the compiled path: {compiled} / {len(records)}")
    for name, us in best.items():
        print(f"{name:<20} {us:7.1f} us/record")
    extra = best["+ segment ratings"] - best["frames, id, labels"]
    print(f"segment ratings add {extra:.1f} us/record")
    if args.json:
        result = {"records": len(records), "compiled_path": compiled, "us_per_record": best,
                  "segments_add_us": extra, "machine": platform.processor() or platform.machine()}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
