"""The input pipeline: exactly-once sharding over ranks x workers, shuffling, sampling, augmentation,
normalization, evaluation mode, errors from workers."""

from __future__ import annotations

import atexit
import collections
import logging
import math
import shutil
import tempfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactvid.config import Config
from compactvid.data.loader import make_loader, num_workers, prepare_frames
from compactvid.data.sampling import augmentation_halves, gather_frames, gather_sampled_frames, sample_frame_indices
from compactvid.data.yt8m import dequantize
from compactvid.errors import DataError
from yt8m_records import frame_payload, video_payload, write_file, write_frame_files

SIZES = (8, 4)
# hypothesis runs many examples per test (no tmp_path): a file of 4 small videos to mutate
LOADER_FUZZ_FILE = Path(write_frame_files(tempfile.mkdtemp(prefix="compactvid-loader-"), [4], frames=[1, 2, 5])[0])
atexit.register(shutil.rmtree, LOADER_FUZZ_FILE.parent, ignore_errors=True)


def _config(**overrides) -> Config:
    values = dict(feature_sizes="8,4", num_classes=10, batch_size=3, iterations=4, n_bagging=2, num_readers=0,
                  shuffle_buffer_size=4, seed=7)
    values.update(overrides)
    return Config(**values)


def _ids(pattern: str, config: Config, **kwargs) -> list[str]:
    return [i for batch in make_loader(pattern, config, **kwargs) for i in batch["ids"]]


@pytest.mark.parametrize("counts", [[7, 0, 4], [3, 5, 2, 6, 1]], ids=["fewer_files_than_readers", "more_files"])
@pytest.mark.parametrize("training", [True, False])
def test_every_record_exactly_once_over_2_ranks_x_2_workers(tmp_path, counts, training):
    write_frame_files(tmp_path, counts)
    config = _config(num_readers=2)
    seen = collections.Counter()
    for rank in range(2):
        ids = _ids(f"{tmp_path}/part*", config, training=training, epoch=1, rank=rank, world_size=2)
        assert ids, f"rank {rank} got no records"
        seen.update(ids)
    expected = {f"f{i}-r{j}" for i, count in enumerate(counts) for j in range(count)}
    assert set(seen) == expected and set(seen.values()) == {1}


def test_training_order_is_seeded_per_epoch(tmp_path):
    write_frame_files(tmp_path, [6, 6, 6])
    config = _config()
    pattern = f"{tmp_path}/part*"
    first = _ids(pattern, config, training=True, epoch=0)
    assert first == _ids(pattern, config, training=True, epoch=0)
    assert first != _ids(pattern, config, training=True, epoch=1)
    assert sorted(first) == sorted(_ids(pattern, config, training=True, epoch=1))
    in_order = _ids(pattern, config, training=False)
    assert in_order == sorted(in_order) and first != in_order


def _frames_of(path: str) -> dict[str, np.ndarray]:
    """Reference: every frame of every video, dequantized then normalized like tf.nn.l2_normalize (float64)."""
    from compactvid.data import iter_videos
    out = {}
    for video in iter_videos(path, feature_sizes=SIZES, num_classes=10):
        x = video.features.astype(np.float64)
        out[video.id] = x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))
    return out


def _frame_numbers(sampled: torch.Tensor, reference: np.ndarray) -> np.ndarray:
    """Which reference frame each sampled frame ``[..., D]`` is (all must match one to 1e-6)."""
    flat = sampled.reshape(-1, sampled.shape[-1]).double().numpy()
    distance = np.abs(flat[:, None, :] - reference[None, :, :]).max(-1)
    assert distance.min(1).max() < 1e-6
    return distance.argmin(1).reshape(sampled.shape[:-1])


@pytest.mark.parametrize("random_frames", [True, False])
@pytest.mark.parametrize("batch_size, shuffle_buffer_size, dequantize", [(8, 4, True), (1, 1, False)],
                         ids=["one_batch", "one_video_per_batch"])
def test_sampling_normalization_and_augmentation(tmp_path, random_frames, batch_size, shuffle_buffer_size,
                                                 dequantize):
    rng = np.random.default_rng(0)
    lengths = {"one": 1, "seven": 7, "forty": 40}
    videos = {name: [rng.integers(0, 256, (n, s), dtype=np.uint8) for s in SIZES] for name, n in lengths.items()}
    path = write_file(tmp_path / "v.tfrecord", [frame_payload(k, [1], v) for k, v in videos.items()])
    reference = _frames_of(path)
    config = _config(batch_size=batch_size, iterations=5, n_bagging=3, data_augmentation=True,
                     sample_random_frames=random_frames, shuffle_buffer_size=shuffle_buffer_size)
    batches = list(make_loader(path, config, training=True, dequantize=dequantize))
    if batch_size == 1:  # --batch_size counts videos: a batch holds both examples of its video
        assert [b["ids"] for b in batches] == [["one", "one"], ["seven", "seven"], ["forty", "forty"]]
    frames = torch.cat([prepare_frames(b["frames"], b["num_frames"]) for b in batches])
    ids = [i for b in batches for i in b["ids"]]
    num_frames = torch.cat([b["num_frames"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    assert frames.shape == (6, 3, 5, sum(SIZES)) and frames.dtype == torch.float32
    assert torch.allclose(frames.norm(dim=-1), torch.ones(6, 3, 5), atol=1e-6)
    halves = collections.defaultdict(list)
    for i, video_id in enumerate(ids):
        numbers = _frame_numbers(frames[i], reference[video_id])
        halves[video_id].append((numbers, int(num_frames[i])))
        assert labels[i].tolist() == [0, 1] + [0] * 8
    # a 1-frame video has no second half: both examples are the whole video
    assert [(h[0].tolist(), h[1]) for h in halves["one"]] == [([[0] * 5] * 3, 1)] * 2
    for name in ("seven", "forty"):
        n = lengths[name]
        (first, first_count), (second, second_count) = sorted(halves[name], key=lambda h: h[0].min())
        assert (first_count, second_count) == (math.ceil(n / 2), n // 2)
        assert first.max() < first_count and second.min() >= first_count and second.max() < n
        if not random_frames:  # contiguous windows (the last frame repeated when the half is shorter)
            for bag in first:
                assert np.all(np.diff(bag) == (bag[:-1] < first_count - 1))


def _sample(rng: np.random.Generator, ranges: list[tuple[int, int]], iterations: int, n_bagging: int,
            random_frames: bool = True) -> np.ndarray:
    starts, stops = np.array(ranges, dtype=np.int64).T
    uniforms = rng.random((len(ranges), n_bagging, iterations if random_frames else 1))
    return sample_frame_indices(uniforms, starts, stops - starts, iterations, random_frames)


def test_sample_frame_indices_distribution():
    rng = np.random.default_rng(0)
    indices = _sample(rng, [(0, 6), (6, 9)], 30000, 2, random_frames=True)
    assert indices.shape == (2, 2, 30000) and indices.dtype == np.int64
    assert indices[0].min() == 0 and indices[0].max() == 5 and indices[1].min() == 6 and indices[1].max() == 8
    assert np.allclose(np.bincount(indices[0].ravel()) / indices[0].size, 1 / 6, atol=0.01)
    assert np.allclose(np.bincount(indices[1].ravel() - 6) / indices[1].size, 1 / 3, atol=0.01)
    windows = _sample(rng, [(0, 10), (10, 11)], 4, 5000, random_frames=False)
    starts = windows[0, :, 0]
    assert set(starts.tolist()) == set(range(7)) and np.all(windows[0] - starts[:, None] == np.arange(4))
    assert windows[1].tolist() == [[10] * 4] * 5000
    assert _sample(rng, [(0, 3)], 5, 1, random_frames=False).tolist() == [[[0, 1, 2, 2, 2]]]
    for random_frames in (True, False):  # an empty range (a video without frames)
        assert _sample(rng, [(0, 0)], 3, 2, random_frames).tolist() == [[[0, 0, 0]] * 2]
    # the largest draw below 1 stays in range
    top = np.nextafter(1.0, 0.0)
    assert sample_frame_indices(np.full((1, 1, 1), top), np.array([5]), np.array([3]), 1).item() == 7
    assert augmentation_halves(5) == ((0, 3), (3, 2)) and augmentation_halves(1) == ((0, 0), (1, 1))


def test_normalization_matches_tensorflow_formula(tmp_path):
    """One frame, sampled: dequantized in float32, then x * rsqrt(max(sum(x^2), 1e-12)), to float32 rounding."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (1, s), dtype=np.uint8) for s in SIZES]
    path = write_file(tmp_path / "one.tfrecord", [frame_payload("x", [0], frames)])
    batch = next(iter(make_loader(path, _config(), training=False)))
    x = dequantize(np.concatenate(frames, axis=1)[0])
    want = x * np.float32(1 / np.sqrt(np.sum(x.astype(np.float64) ** 2)))
    assert np.allclose(batch["frames"][0].numpy(), want, rtol=2e-7, atol=1e-7)


def test_evaluation_without_labels_is_deterministic_across_workers(tmp_path):
    write_frame_files(tmp_path, [5, 4], frames=[1, 6, 13], labels=False)
    pattern = f"{tmp_path}/part*"

    def run(readers: int, world_size: int) -> dict[str, torch.Tensor]:
        out = {}
        for rank in range(world_size):
            for batch in make_loader(pattern, _config(num_readers=readers, data_augmentation=True), training=False,
                                     rank=rank, world_size=world_size):
                assert batch["labels"].sum() == 0
                out.update(zip(batch["ids"], batch["frames"]))
        return out

    single, sharded = run(0, 1), run(2, 2)
    assert len(single) == 9 and single.keys() == sharded.keys()
    for video_id in single:
        assert torch.equal(single[video_id], sharded[video_id])


def test_video_level_batches(tmp_path):
    rgb, audio = np.arange(1, 9, dtype=np.float32), -np.ones(4, dtype=np.float32)
    path = write_file(tmp_path / "v.tfrecord", [video_payload(f"v{i}", [i], {"mean_rgb": rgb * i, "mean_audio": audio})
                                                for i in range(1, 5)])
    config = _config(frame_features=False, feature_names="mean_rgb,mean_audio")
    batches = list(make_loader(path, config, training=False))
    assert [b["frames"].shape for b in batches] == [(3, 12), (1, 12)]
    x = np.concatenate([rgb, audio])
    assert np.allclose(batches[0]["frames"][0].numpy(), x / np.linalg.norm(x), atol=1e-7)
    assert batches[1]["labels"][0, 4] == 1 and batches[0]["num_frames"].tolist() == [1, 1, 1]


def test_worker_errors_arrive_as_one_line_data_error(tmp_path, caplog):
    good = write_frame_files(tmp_path, [4])[0]
    bad = write_file(tmp_path / "part99.tfrecord",
                     [frame_payload("bad", [12], [np.zeros((2, 8), np.uint8), np.zeros((2, 4), np.uint8)])])
    with pytest.raises(DataError, match=r"part99.tfrecord: record 0 \(byte 0\): label 12 .* out of range") as info:
        list(make_loader(f"{tmp_path}/part*", _config(num_readers=2), training=True))
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    loader = make_loader(f"{good},{bad}", _config(num_readers=2, skip_corrupt_records=True), training=True)
    with caplog.at_level(logging.WARNING):
        assert len([i for b in loader for i in b["ids"]]) == 4
    assert loader.report.corrupt == 1 and loader.report.records == 4
    assert "1 corrupt records skipped" in caplog.text


def test_num_readers_capped_at_cpus(caplog):
    with caplog.at_level(logging.INFO):
        assert num_workers(100000) < 100000
    assert "--num_readers=100000" in caplog.text
    assert num_workers(0) == 0


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("dequantize", [True, False])
def test_a_video_without_frames_gives_zero_frames_as_the_original(tmp_path, augment, dequantize):
    write_frame_files(tmp_path, [4], frames=[3, 0, 5, 0])
    config = _config(data_augmentation=augment, batch_size=4)
    batch = next(iter(make_loader(f"{tmp_path}/part*", config, training=True, dequantize=dequantize)))
    frames = prepare_frames(batch["frames"], batch["num_frames"])
    empty = batch["num_frames"] == 0
    assert int(empty.sum()) == (4 if augment else 2)
    assert torch.equal(frames[empty], torch.zeros_like(frames[empty]))
    norms = torch.linalg.vector_norm(frames[~empty], dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def test_quantized_batches_give_the_same_frames_after_prepare_frames(tmp_path):
    write_frame_files(tmp_path, [5, 3], frames=[1, 2, 0, 9, 40])
    config = _config(data_augmentation=True, batch_size=4)
    floats = list(make_loader(f"{tmp_path}/part*", config, training=True, epoch=2))
    quantized = list(make_loader(f"{tmp_path}/part*", config, training=True, epoch=2, dequantize=False))
    assert [b["ids"] for b in floats] == [b["ids"] for b in quantized]
    for f, q in zip(floats, quantized):
        assert q["frames"].dtype == torch.uint8 and q["frames"].shape == f["frames"].shape
        assert torch.equal(prepare_frames(q["frames"], q["num_frames"]), f["frames"])
        assert torch.equal(q["labels"], f["labels"]) and torch.equal(q["num_frames"], f["num_frames"])
    assert prepare_frames(floats[0]["frames"], floats[0]["num_frames"]) is floats[0]["frames"]


def test_batch_buffers_are_reused_only_once_released(tmp_path):
    write_frame_files(tmp_path, [30])
    config = _config(batch_size=2)
    kept = [b["frames"] for b in make_loader(f"{tmp_path}/part*", config, training=False)]
    assert len({t.data_ptr() for t in kept}) == len(kept) == 15  # every batch kept: none overwritten
    copies = [t.clone() for t in kept]
    assert all(torch.equal(a, b) for a, b in zip(kept, copies))
    pointers = set()
    for batch in make_loader(f"{tmp_path}/part*", config, training=False):
        pointers.add(batch["frames"].data_ptr())
    assert len(pointers) < 15  # released batches were reused
    assert [torch.equal(b["frames"], c) for b, c in
            zip(make_loader(f"{tmp_path}/part*", config, training=False), copies)] == [True] * 15


def test_local_and_stream_files_give_the_same_batches(tmp_path):
    """Local files are memory-mapped, others read as streams: the same batches either way."""
    paths = write_frame_files(tmp_path, [5, 4], frames=[1, 2, 9, 40])
    for path in paths:
        with open(path, "rb") as local, fsspec.open(f"memory://same/{Path(path).name}", "wb") as remote:
            remote.write(local.read())
    config = _config(data_augmentation=True, shuffle_buffer_size=3)
    for as_float in (True, False):
        local = list(make_loader(f"{tmp_path}/part*", config, training=True, epoch=3, dequantize=as_float))
        stream = list(make_loader("memory://same/part*", config, training=True, epoch=3, dequantize=as_float))
        assert [b["ids"] for b in local] == [b["ids"] for b in stream]
        for a, b in zip(local, stream):
            assert all(torch.equal(a[key], b[key]) for key in ("frames", "labels", "num_frames"))


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_payload_found_when_the_record_leaves_the_shuffle_buffer(tmp_path, caplog, workers):
    path = write_frame_files(tmp_path, [6])[0]
    data = bytearray(Path(path).read_bytes())
    data[-20] ^= 1  # inside the last record's payload: its framing stays intact
    Path(path).write_bytes(bytes(data))
    config = _config(num_readers=workers, shuffle_buffer_size=4)
    with pytest.raises(DataError, match=r"part00.tfrecord: record 5 \(byte \d+\): payload CRC mismatch"):
        list(make_loader(path, config, training=True))
    loader = make_loader(path, _config(num_readers=workers, shuffle_buffer_size=4, skip_corrupt_records=True),
                         training=True)
    with caplog.at_level(logging.WARNING):
        assert sorted(i for b in loader for i in b["ids"]) == [f"f0-r{j}" for j in range(5)]
    assert loader.report.corrupt == 1 and loader.report.records == 5


def test_gather_frames_copies_whole_frames_from_where_they_lie():
    rng = np.random.default_rng(3)
    record = rng.integers(0, 256, 7 * 13 + 5 * 6, dtype=np.uint8)
    frames = [record[:91].reshape(7, 13)[:, 2:11], record[91:].reshape(5, 6)[:, 1:4]]  # 9- and 3-byte frames
    offsets, strides, sizes = np.array([2, 92]), np.array([13, 6]), np.array([9, 3])
    rows = np.array([[[4, 0, 4], [3, 3, 1]]])
    out = np.zeros((1, 2, 3, 12), dtype=np.uint8)
    gather_frames(out, record, offsets, strides, sizes, 5, rows)
    assert np.array_equal(out[..., :9], frames[0][rows]) and np.array_equal(out[..., 9:], frames[1][rows])
    for bad_rows, num_frames in [(rows + 1, 5), (rows - 1, 5), (rows, 8)]:  # outside the video, or the buffer
        untouched = np.zeros_like(out)
        with pytest.raises(IndexError):
            gather_frames(untouched, record, offsets, strides, sizes, num_frames, bad_rows)
        assert not untouched.any()
    for wrong in (np.zeros((1, 2, 3, 11), np.uint8), np.zeros((1, 2, 2, 12), np.uint8)):
        with pytest.raises(ValueError):
            gather_frames(wrong, record, offsets, strides, sizes, 5, rows)
    with pytest.raises(ValueError):  # fewer uniforms than iterations
        sample_frame_indices(np.zeros((1, 1, 2)), np.array([0]), np.array([5]), 3, True)


def test_gather_sampled_frames_is_sampling_then_gathering():
    rng = np.random.default_rng(4)
    record = rng.integers(0, 256, 20 * 5, dtype=np.uint8)
    offsets, strides, sizes = np.array([0, 3]), np.array([5, 5]), np.array([3, 2])
    for random_frames in (True, False):
        uniforms = rng.random((2, 3, 4 if random_frames else 1))
        starts, counts = (0, 11), (11, 9)
        out = np.empty((2, 3, 4, 5), dtype=np.uint8)
        gather_sampled_frames(out, record, offsets, strides, sizes, 20, uniforms, starts, counts, 4, random_frames)
        rows = sample_frame_indices(uniforms, np.array(starts), np.array(counts), 4, random_frames)
        assert np.array_equal(out, record.reshape(20, 5)[rows])


def _loader_reads(path: str, frame_level: bool) -> None:
    config = _config(frame_features=frame_level, feature_names=None if frame_level else "mean_rgb,mean_audio",
                     data_augmentation=True, shuffle_buffer_size=2)
    try:
        for _ in make_loader(path, config, training=True):
            pass
    except DataError:
        pass  # the only exception type allowed to escape


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6),
       st.integers(0, 10**6), st.booleans())
def test_fuzz_mutated_files_through_the_loader(flips, cut, frame_level):
    """Payload CRCs are checked when a record leaves the shuffle buffer: still only DataErrors escape."""
    data = bytearray(LOADER_FUZZ_FILE.read_bytes())
    for offset, mask in flips:
        data[offset % len(data)] ^= mask
    path = LOADER_FUZZ_FILE.with_name("mutated.tfrecord")
    path.write_bytes(bytes(data[:cut % (len(data) + 1)]))
    _loader_reads(str(path), frame_level)
