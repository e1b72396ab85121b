"""Synthetic YouTube-8M data: official layout, quantization, determinism, statistics, learnability, CLI."""

import csv
import filecmp
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from compactvid.cli import main
from compactvid.data import iter_videos
from compactvid.data.proto import Example, SequenceExample
from compactvid.data.synthetic import (AUDIO_ONLY, BOTH, VISUAL_ONLY, VOCABULARY_COLUMNS, GenerativeModel,
                                       dequantize, generate_videos, make_world, quantize, sample_labels,
                                       split_sizes, write_dataset)
from compactvid.data.tfrecord import iter_records
from compactvid.errors import CompactVidError, ConfigError, DataError
from compactvid.metrics import gap

NUM_VIDEOS, NUM_CLASSES = 40, 8


@pytest.fixture(scope="module")
def frame_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("frame"))
    write_dataset(directory, NUM_VIDEOS, NUM_CLASSES, seed=7, num_shards=2, progress=False)
    return directory


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("video"))
    write_dataset(directory, NUM_VIDEOS, NUM_CLASSES, seed=7, num_shards=2, video_level=True, progress=False)
    return directory


def records(directory, split, message_type):
    return [message_type.FromString(r.payload)
            for name in sorted(os.listdir(directory)) if name.startswith(split) and name.endswith(".tfrecord")
            for r in iter_records(os.path.join(directory, name))]


def test_quantization_is_the_exact_inverse_of_the_official_dequantization():
    q = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize(dequantize(q)), q)
    # The official reader's formula, in float32 as TensorFlow computes it.
    np.testing.assert_array_equal(dequantize(q), q.astype(np.float32) * np.float32(4 / 255)
                                  + np.float32(4 / 512 - 2))
    x = np.random.default_rng(0).uniform(-1.99, 2.0, 10_000).astype(np.float32)
    assert np.abs(dequantize(quantize(x)) - x).max() <= 2 / 255 + 1e-6  # half a step
    np.testing.assert_array_equal(quantize(np.array([-5.0, 5.0])), [0, 255])  # out of range: clipped


def test_file_names_and_split_sizes(frame_dir):
    sizes = split_sizes(NUM_VIDEOS)
    assert sizes == {"train": 28, "validate": 8, "test": 4}  # 70 / 20 / 10
    assert sorted(os.listdir(frame_dir)) == [
        "test0000.tfrecord", "test0001.tfrecord", "train0000.tfrecord", "train0001.tfrecord",
        "validate0000.tfrecord", "validate0001.tfrecord", "vocabulary.csv"]
    for split, size in sizes.items():
        assert len(records(frame_dir, split, SequenceExample)) == size


def test_frame_level_records_have_exactly_the_official_layout(frame_dir):
    ids = []
    for split in ("train", "validate", "test"):
        for example in records(frame_dir, split, SequenceExample):
            context = example.context.feature
            assert set(context) == ({"id"} if split == "test" else {"id", "labels"})
            assert context["id"].WhichOneof("kind") == "bytes_list"
            (video_id,) = context["id"].bytes_list.value
            ids.append(video_id.decode())
            if split != "test":
                labels = list(context["labels"].int64_list.value)
                assert context["labels"].WhichOneof("kind") == "int64_list"
                assert labels == sorted(set(labels)) and 1 <= len(labels) and 0 <= min(labels)
                assert max(labels) < NUM_CLASSES
            lists = example.feature_lists.feature_list
            assert set(lists) == {"rgb", "audio"}
            assert len(lists["rgb"].feature) == len(lists["audio"].feature) >= 60
            for name, size in (("rgb", 1024), ("audio", 128)):
                for frame in lists[name].feature:
                    assert frame.WhichOneof("kind") == "bytes_list"
                    (value,) = frame.bytes_list.value
                    assert len(value) == size
    assert len(set(ids)) == NUM_VIDEOS and all(len(i) == 4 and i.isalnum() for i in ids)


def test_files_read_back_through_the_package_reader(frame_dir):
    train = list(iter_videos(f"{frame_dir}/train*.tfrecord", num_classes=NUM_CLASSES))
    test = list(iter_videos(f"{frame_dir}/test*.tfrecord", num_classes=NUM_CLASSES))
    assert len(train) == 28 and len(test) == 4
    assert all(v.features.shape[1] == 1152 and 60 <= v.num_frames <= 300 for v in train + test)
    assert any(v.num_frames == 300 for v in train)  # longer videos are capped by the reader
    assert all(len(v.labels) >= 1 for v in train) and all(len(v.labels) == 0 for v in test)
    assert np.abs(train[0].features).max() <= 2.01


def test_some_videos_are_longer_than_300_frames(frame_dir):
    lengths = [len(e.feature_lists.feature_list["rgb"].feature) for e in records(frame_dir, "", SequenceExample)]
    assert 60 <= min(lengths) and max(lengths) <= 360
    assert sum(n > 300 for n in lengths) >= 3


def test_video_level_records_are_the_means_of_the_same_frames(frame_dir, video_dir):
    for split in ("train", "validate", "test"):
        frames = records(frame_dir, split, SequenceExample)
        videos = records(video_dir, split, Example)
        assert len(frames) == len(videos)
        for sequence, example in zip(frames, videos):
            feature = example.features.feature
            assert set(feature) == ({"id", "mean_rgb", "mean_audio"} if split == "test"
                                    else {"id", "labels", "mean_rgb", "mean_audio"})
            assert feature["id"].bytes_list.value == sequence.context.feature["id"].bytes_list.value
            if split != "test":
                assert feature["labels"].int64_list.value == sequence.context.feature["labels"].int64_list.value
            for name, size in (("rgb", 1024), ("audio", 128)):
                assert feature[f"mean_{name}"].WhichOneof("kind") == "float_list"
                means = np.array(feature[f"mean_{name}"].float_list.value, np.float32)
                q = np.frombuffer(b"".join(f.bytes_list.value[0]
                                           for f in sequence.feature_lists.feature_list[name].feature), np.uint8)
                np.testing.assert_allclose(means, dequantize(q.reshape(-1, size)).mean(axis=0), atol=1e-6)


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(frame_dir, tmp_path):
    write_dataset(str(tmp_path / "again"), NUM_VIDEOS, NUM_CLASSES, seed=7, num_shards=2, progress=False)
    names = sorted(os.listdir(frame_dir))
    match, mismatch, errors = filecmp.cmpfiles(frame_dir, tmp_path / "again", names, shallow=False)
    assert match == names and not mismatch and not errors
    write_dataset(str(tmp_path / "other"), NUM_VIDEOS, NUM_CLASSES, seed=8, num_shards=2, progress=False)
    for name in names:
        if name.endswith(".tfrecord"):
            assert (tmp_path / "other" / name).read_bytes() != (tmp_path / "again" / name).read_bytes()


def test_videos_do_not_depend_on_the_dataset_size():
    world = make_world(NUM_CLASSES, 3)
    short = list(generate_videos(world, 5, 3))
    long = list(generate_videos(world, 9, 3))
    for a, b in zip(short, long):
        assert a.id == b.id
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.audio, b.audio)


def test_label_statistics_are_youtube8m_like():
    num_classes = 30
    model = GenerativeModel()
    world = make_world(num_classes, 0, model)
    rng = np.random.default_rng(0)
    labels = [sample_labels(world, model, rng) for _ in range(3000)]
    counts_per_video = np.array([len(x) for x in labels])
    assert counts_per_video.min() >= 1
    assert 2.7 < counts_per_video.mean() < 3.3
    frequency = np.bincount(np.concatenate(labels), minlength=num_classes)
    assert frequency[:3].sum() > 4 * frequency[-3:].sum()  # skewed, most frequent first
    assert frequency.min() > 0
    # Co-occurring labels: pairs within a topic are far more common than if labels were independent.
    pairs = [(a, b) for x in labels for i, a in enumerate(x) for b in x[i + 1:]]
    same_topic = np.mean([world.topic[a] == world.topic[b] for a, b in pairs])
    chance = sum((t == world.topic).sum() - 1 for t in world.topic) / (num_classes * (num_classes - 1))
    assert same_topic > 2 * chance


def test_some_classes_are_audio_only_and_some_visual_only():
    world = make_world(20, 0)
    assert Counter(world.modality.tolist()) == {BOTH: 12, AUDIO_ONLY: 4, VISUAL_ONLY: 4}
    audio_only, visual_only = world.modality == AUDIO_ONLY, world.modality == VISUAL_ONLY
    assert not world.rgb_concepts[:20][audio_only].any() and world.audio_concepts[:20][audio_only].all()
    assert not world.audio_concepts[:20][visual_only].any() and world.rgb_concepts[:20][visual_only].all()
    assert not world.rgb_concepts[20].any() and not world.audio_concepts[20].any()  # background


def test_labels_are_learnable_but_not_trivially():
    """A ridge regression on the videos' mean features beats the class prior by far, yet is far from 1."""
    num_classes, num_videos = 10, 200
    world = make_world(num_classes, 0)
    features, targets = [], []
    for video in generate_videos(world, num_videos, 0):
        features.append(np.concatenate([dequantize(video.rgb).mean(0), dequantize(video.audio).mean(0)]))
        targets.append(np.isin(np.arange(num_classes), video.labels).astype(np.float64))
    x, y = np.array(features, np.float64), np.array(targets)
    x = (x - x.mean(0)) / x.std(0)
    train = 140
    weights = np.linalg.solve(x[:train].T @ x[:train] + 1000 * np.eye(x.shape[1]), x[:train].T @ y[:train])
    prior = np.tile(y[:train].mean(0), (num_videos - train, 1))
    prior_gap = gap(prior, y[train:])
    ridge_gap = gap(x[train:] @ weights + y[:train].mean(0), y[train:])
    assert ridge_gap > prior_gap + 0.2
    assert ridge_gap < 0.95


def test_vocabulary_has_the_official_columns_and_train_counts(frame_dir):
    with open(os.path.join(frame_dir, "vocabulary.csv"), newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == VOCABULARY_COLUMNS
        rows = list(reader)
    assert [int(r["Index"]) for r in rows] == list(range(NUM_CLASSES))
    assert all(r["Name"] and r["Vertical1"].startswith("Topic") for r in rows)
    train_labels = np.concatenate([v.labels for v in iter_videos(f"{frame_dir}/train*.tfrecord")])
    assert [int(r["TrainVideoCount"]) for r in rows] == np.bincount(train_labels, minlength=NUM_CLASSES).tolist()


def test_cli_writes_refuses_to_mix_datasets_and_overwrites(tmp_path, capsys):
    out = str(tmp_path / "data")
    assert main(["make-data", "--output_dir", out, "--num_videos", "12", "--num_classes", "5", "--seed", "1",
                 "--quiet", "--min_length", "5", "--max_length", "10"]) == 0
    assert "9 / 2 / 1 train / validate / test frame-level videos in 4 / 2 / 1 files" in capsys.readouterr().out
    assert main(["make-data", "--output_dir", out, "--num_videos", "12", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "--overwrite" in error and out in error
    assert main(["make-data", "--output_dir", out, "--num_videos", "12", "--num_classes", "5", "--num_shards",
                 "1", "--quiet", "--overwrite", "--video_level", "--min_length", "5", "--max_length", "10"]) == 0
    assert sorted(os.listdir(out)) == ["test0000.tfrecord", "train0000.tfrecord", "validate0000.tfrecord",
                                       "vocabulary.csv"]
    videos = list(iter_videos(f"{out}/train*.tfrecord", frame_level=False,
                              feature_names=("mean_rgb", "mean_audio")))
    assert len(videos) == 9 and videos[0].features.shape == (1152,)


@pytest.mark.parametrize("argv, message", [
    (["--num_videos", "2"], "--num_videos=2"),
    (["--num_classes", "0"], "--num_classes=0"),
    (["--num_shards", "0"], "--num_shards=0"),
    (["--min_length", "50", "--max_length", "40"], "--min_length"),
])
def test_cli_rejects_impossible_settings(tmp_path, capsys, argv, message):
    assert main(["make-data", "--output_dir", str(tmp_path / "x"), "--quiet", *argv]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_library_errors_are_package_errors(tmp_path):
    with pytest.raises(ConfigError):
        write_dataset(str(tmp_path), 10, 5, 0, model=GenerativeModel(background_prob=0.6, distractor_prob=0.5))
    write_dataset(str(tmp_path), 3, 2, 0, progress=False)
    with pytest.raises(DataError, match="--overwrite"):
        write_dataset(str(tmp_path), 3, 2, 0, progress=False)
    assert issubclass(DataError, CompactVidError)


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert main(["make-data", "--output_dir", str(tmp_path), "--num_videos", "12", "--num_classes", "5",
                 "--min_length", "5", "--max_length", "10"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "make-data:" not in err


def test_files_are_byte_identical_from_one_process_to_the_next(tmp_path):
    """Protobuf orders map entries (the features) by a hash that changes between processes, unless told not to."""
    written = []
    for run in range(3):
        out = tmp_path / str(run)
        subprocess.run([sys.executable, "-m", "compactvid.cli", "make-data", "--output_dir", str(out),
                        "--num_videos", "6", "--num_classes", "5", "--min_length", "2", "--max_length", "3",
                        "--num_shards", "1"], check=True, capture_output=True)
        written.append((out / "train0000.tfrecord").read_bytes())
    assert written[0] == written[1] == written[2]
