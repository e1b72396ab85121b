"""Synthetic datasets in the exact YouTube-8M format: learnable, not trivial, deterministic for a seed.

The generative model, in the spirit of YouTube-8M
-------------------------------------------------
*World* (drawn once from the seed). ``num_classes`` classes, indexed by decreasing frequency as in the
official vocabulary: class ``c`` is drawn with weight ``1 / (c + 1) ** zipf_exponent`` (Zipf). Classes are
grouped at random into topics of about ``topic_size`` classes. Each class has ``concepts_per_class``
visual concepts (directions in the 1024-d ``rgb`` space) and as many audio concepts (in the 128-d ``audio``
space). A concept is a mix of a topic direction, a class direction and its own direction, so the classes of
a topic look alike. A fraction ``audio_only_fraction`` of the classes has no visual concept (only the audio
identifies them) and a fraction ``visual_only_fraction`` no audio concept.

*Labels.* ``1 + Poisson(extra_labels_mean)`` labels per video (about 3 on average, at least 1, at most
``min(max_labels, num_classes)``). The first is drawn by class weight; each further one, with probability
``same_topic_prob``, from the first label's topic (co-occurring labels), else from all classes, again by
class weight and without repeats.

*Length.* Uniform in ``[min_length, max_length]`` frames at 1 frame per second (60..360 by default: one video
in five is longer than the 300 frames a model reads).

*Frames.* A video is a sequence of shots: a new shot starts at each second with probability
``1 / mean_shot_seconds``. The labels of a video get Dirichlet(``label_share_concentration``) shares of its
shots, so some labels dominate a video and others are only glimpsed. A shot shows one concept of a label
drawn by these shares, or, with probability ``background_prob``, no concept, or, with probability
``distractor_prob``, a concept of a class drawn uniformly at random (mostly one the video is not labelled
with). Each frame, per modality::

    x_t = mean + style_video + amplitude_shot * signal * concept_shot + shot_noise_shot + frame_noise_t

with a dataset mean, a per-video style offset, shot amplitudes uniform in [0.5, 1.5], and Gaussian noise of
which one part is constant over a shot (consecutive frames are correlated; the correlation drops at shot
boundaries) and one part is new at every frame. The frame noise is drawn as Gaussian quantiles indexed by
random bytes (8-bit resolution, below the 8-bit output quantization) because that is several times faster
than a Gaussian generator and generation speed is dominated by it. Then the official quantization
(:func:`quantize`).

*Video level* (``video_level=True``): the very same videos (same seed, same frames), stored as
``mean_rgb`` / ``mean_audio`` = the mean over all frames of the dequantized frame features.

*Segment ratings* (``segments=True``, the 2019 release's layout): a segment vocabulary of
``segment_class_fraction`` of the classes (drawn from the seed), and in the validate and test files each
video's labels that are in it are rated on a few 5-frame segments (starting at multiples of 5): up to
``rated_positives`` segments where the class's concepts are shown in at least 3 of the 5 frames (score 1)
and up to ``rated_negatives`` where they are shown in none (score 0); segments between the two are not
rated, as a rater would hesitate. The ratings thus say what the frames show. They are drawn from a
generator of their own, so the frames are the same with or without them.

Everything a video holds depends only on the seed, the world settings and its index (not on the number of
videos, shards or the level), so datasets of different sizes from one seed share their first videos.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Iterator

import fsspec
import numpy as np
from tqdm import tqdm

from compactvid.data.proto import make_example, make_sequence_example
from compactvid.data.segments import SEGMENT_SIZE
from compactvid.data.tfrecord import TFRecordWriter
from compactvid.data.yt8m import DEQUANTIZE_BIAS, QUANTIZED_MAX, QUANTIZED_MIN, dequantize
from compactvid.errors import ConfigError, DataError

RGB_SIZE = 1024
AUDIO_SIZE = 128
SPLITS = ("train", "validate", "test")
SPLIT_FRACTIONS = (0.7, 0.2, 0.1)
VOCABULARY_COLUMNS = ("Index", "TrainVideoCount", "KnowledgeGraphId", "Name", "WikiUrl",
                      "Vertical1", "Vertical2", "Vertical3", "WikiDescription")

# Bytes per unit of the official quantization (the inverse of its dequantization step, exactly 63.75).
_INV_QUANT_SCALE = np.float32(255 / (QUANTIZED_MAX - QUANTIZED_MIN))

# Video ids are 4 characters, as in the 2018 release.
_ID_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_ID_LENGTH = 4
MAX_VIDEOS = len(_ID_ALPHABET) ** _ID_LENGTH

# Standard-normal quantiles of the 256 byte values: a byte drawn uniformly indexes a Gaussian sample.
_GAUSSIAN_BY_BYTE = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)
_GAUSSIAN_BY_BYTE /= _GAUSSIAN_BY_BYTE.std()

BOTH, AUDIO_ONLY, VISUAL_ONLY = 0, 1, 2
_MODALITY_TEXT = {BOTH: "visual and audio concepts", AUDIO_ONLY: "audio concepts only (nothing in rgb)",
                  VISUAL_ONLY: "visual concepts only (nothing in audio)"}


def _quantize_inplace(x: np.ndarray) -> np.ndarray:
    """`quantize`, using the float32 array `x` as scratch space."""
    x -= DEQUANTIZE_BIAS
    x *= _INV_QUANT_SCALE
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def quantize(x: np.ndarray) -> np.ndarray:
    """Float features -> bytes: the byte whose :func:`dequantize` value is nearest to `x`, any shape.

    ``q = clip(round((x - (4/512 - 2)) * 255/4), 0, 255)``, the exact inverse of the official
    dequantization: ``quantize(dequantize(q)) == q`` for every byte, and values in [-1.992, 2.008] come back
    within half a step (4/510). (YouTube-8M's feature extractor rounds ``(x + 2) * 255/4`` instead, which the
    official reader then shifts by 4/512, half a step; this makes no difference to synthetic data.)
    """
    return _quantize_inplace(np.array(x, dtype=np.float32, copy=True))


@dataclass(frozen=True)
class GenerativeModel:
    """The settings of the generative model (module docstring); the defaults are calibrated.

    Calibration: a small DBoF model trained 4 epochs on ``--num_videos 800 --num_classes 20`` reaches a
    validation GAP well above 0.5 and well below 1 (see docs/benchmarks.md). Per-dimension standard
    deviations are in dequantized units (the quantization range is [-2, 2]).
    """

    zipf_exponent: float = 1.0
    topic_size: int = 5
    concepts_per_class: int = 3
    audio_only_fraction: float = 0.2
    visual_only_fraction: float = 0.2
    topic_share: float = 0.4     # variance share of the topic direction in a concept
    class_share: float = 0.3     # variance share of the class direction (the rest is the concept's own)
    extra_labels_mean: float = 2.0
    max_labels: int = 10
    same_topic_prob: float = 0.7
    min_length: int = 60
    max_length: int = 360
    mean_shot_seconds: float = 4.0
    label_share_concentration: float = 1.0
    background_prob: float = 0.3
    distractor_prob: float = 0.1
    signal: float = 0.2          # concept std per dimension (times the shot amplitude)
    audio_signal: float = 0.2
    mean_std: float = 0.2        # dataset mean, per dimension
    style_std: float = 0.15      # per video
    shot_noise_std: float = 0.2
    frame_noise_std: float = 0.35
    segment_class_fraction: float = 0.5
    rated_positives: int = 3     # per rated class and video, at most
    rated_negatives: int = 2

    def validate(self) -> None:
        """Raise ConfigError on settings no dataset can be drawn from."""
        if not 1 <= self.min_length <= self.max_length:
            raise ConfigError(f"video lengths {self.min_length}..{self.max_length}: need "
                              f"1 <= --min_length <= --max_length")
        if self.background_prob + self.distractor_prob >= 1:
            raise ConfigError("background_prob + distractor_prob must be below 1: shots must show labels")
        if self.audio_only_fraction + self.visual_only_fraction > 1:
            raise ConfigError("audio_only_fraction + visual_only_fraction must be at most 1")
        if self.signal < 0 or self.audio_signal < 0:
            raise ConfigError("signal strengths must be non-negative (--signal)")
        if self.concepts_per_class < 1 or self.mean_shot_seconds < 1 or self.label_share_concentration <= 0:
            raise ConfigError("concepts_per_class and mean_shot_seconds must be at least 1, "
                              "label_share_concentration positive")
        if self.topic_share + self.class_share > 1:
            raise ConfigError("topic_share + class_share must be at most 1 (they are shares of the variance)")


@dataclass(frozen=True)
class World:
    """What a seed fixes for all videos: class weights, topics, modalities and concepts.

    Concept arrays have one extra, all-zero class at index `num_classes`, the "no concept" of a
    background shot.
    """

    class_weights: np.ndarray    # [C] float64, sums to 1, decreasing
    topic: np.ndarray            # [C] int64
    modality: np.ndarray         # [C] int64: BOTH, AUDIO_ONLY or VISUAL_ONLY
    rgb_concepts: np.ndarray     # [C + 1, concepts_per_class, 1024] float32
    audio_concepts: np.ndarray   # [C + 1, concepts_per_class, 128] float32
    rgb_mean: np.ndarray         # [1024] float32
    audio_mean: np.ndarray       # [128] float32
    topic_members: list[np.ndarray] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_weights)


def sample_world(num_classes: int, model: GenerativeModel, rng: np.random.Generator) -> World:
    """Draw the classes' weights, topics, modalities and concepts (module docstring)."""
    c = num_classes
    weights = 1.0 / np.arange(1, c + 1) ** model.zipf_exponent
    num_topics = max(1, round(c / model.topic_size))
    topic = rng.permutation(np.arange(c) % num_topics)
    modality = np.full(c, BOTH)
    order = rng.permutation(c)
    n_audio, n_visual = round(model.audio_only_fraction * c), round(model.visual_only_fraction * c)
    modality[order[:n_audio]] = AUDIO_ONLY
    modality[order[n_audio:n_audio + n_visual]] = VISUAL_ONLY

    def concepts(dim: int, std: float, silent: int) -> np.ndarray:
        k = model.concepts_per_class
        own_share = 1.0 - model.topic_share - model.class_share
        topic_dirs = rng.standard_normal((num_topics, 1, dim))
        class_dirs = rng.standard_normal((c, 1, dim))
        own = rng.standard_normal((c, k, dim))
        mix = (math.sqrt(model.topic_share) * topic_dirs[topic] + math.sqrt(model.class_share) * class_dirs
               + math.sqrt(own_share) * own)
        mix[modality == silent] = 0.0
        return np.concatenate([std * mix, np.zeros((1, k, dim))]).astype(np.float32)

    rgb = concepts(RGB_SIZE, model.signal, AUDIO_ONLY)
    audio = concepts(AUDIO_SIZE, model.audio_signal, VISUAL_ONLY)
    return World(class_weights=weights / weights.sum(), topic=topic, modality=modality,
                 rgb_concepts=rgb, audio_concepts=audio,
                 rgb_mean=(model.mean_std * rng.standard_normal(RGB_SIZE)).astype(np.float32),
                 audio_mean=(model.mean_std * rng.standard_normal(AUDIO_SIZE)).astype(np.float32),
                 topic_members=[np.flatnonzero(topic == t) for t in range(num_topics)])


def sample_labels(world: World, model: GenerativeModel, rng: np.random.Generator) -> np.ndarray:
    """One video's labels: sorted, distinct int64 class indices (module docstring)."""
    c = world.num_classes
    count = min(1 + rng.poisson(model.extra_labels_mean), model.max_labels, c)
    weights = world.class_weights.copy()
    first = rng.choice(c, p=weights)
    chosen = [first]
    weights[first] = 0.0
    same_topic = world.topic_members[world.topic[first]]
    while len(chosen) < count:
        pool = weights
        if rng.random() < model.same_topic_prob and weights[same_topic].sum() > 0:
            pool = np.zeros(c)
            pool[same_topic] = weights[same_topic]
        label = rng.choice(c, p=pool / pool.sum())
        chosen.append(label)
        weights[label] = 0.0
    return np.sort(np.array(chosen, dtype=np.int64))


def _render(concepts: np.ndarray, mean: np.ndarray, model: GenerativeModel, shot_class: np.ndarray,
            shot_amplitude: np.ndarray, shot_of_frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quantized frames of one modality of one video: uint8 [frames, dim] (module docstring)."""
    dim = concepts.shape[-1]
    num_shots = len(shot_class)
    concept = rng.integers(concepts.shape[1], size=num_shots)
    shots = concepts[shot_class, concept] * shot_amplitude[:, None].astype(np.float32)
    shots += model.shot_noise_std * rng.standard_normal((num_shots, dim), dtype=np.float32)
    shots += model.style_std * rng.standard_normal(dim, dtype=np.float32)
    shots += mean
    # Per frame, work in quantization steps (the shots' values shifted and scaled once, the noise table
    # prescaled) so that the frame-sized arrays see only a table lookup, one addition and the rounding.
    shots -= DEQUANTIZE_BIAS
    shots *= _INV_QUANT_SCALE
    noise_table = _GAUSSIAN_BY_BYTE * np.float32(model.frame_noise_std * _INV_QUANT_SCALE)
    frames = noise_table[rng.integers(0, 256, size=(len(shot_of_frame), dim), dtype=np.uint8)]
    frames += shots[shot_of_frame]
    np.rint(frames, out=frames)
    np.clip(frames, 0, 255, out=frames)
    return frames.astype(np.uint8)


def render_video(world: World, model: GenerativeModel, labels: np.ndarray, num_frames: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames of one video with these labels: (rgb uint8 [num_frames, 1024], audio uint8 [num_frames, 128],
    the class whose concept each frame shows, int64 [num_frames], num_classes for none)."""
    new_shot = rng.random(num_frames) < 1.0 / model.mean_shot_seconds
    new_shot[0] = True
    shot_of_frame = np.cumsum(new_shot) - 1
    num_shots = shot_of_frame[-1] + 1

    shares = rng.dirichlet(np.full(len(labels), model.label_share_concentration))
    shot_class = labels[rng.choice(len(labels), size=num_shots, p=shares)]
    kind = rng.random(num_shots)
    shot_class[kind < model.background_prob] = world.num_classes
    distractor = (kind >= model.background_prob) & (kind < model.background_prob + model.distractor_prob)
    shot_class[distractor] = rng.integers(world.num_classes, size=int(distractor.sum()))
    amplitude = rng.uniform(0.5, 1.5, num_shots)

    rgb = _render(world.rgb_concepts, world.rgb_mean, model, shot_class, amplitude, shot_of_frame, rng)
    audio = _render(world.audio_concepts, world.audio_mean, model, shot_class, amplitude, shot_of_frame, rng)
    return rgb, audio, shot_class[shot_of_frame]


@dataclass(frozen=True)
class SyntheticVideo:
    """One synthetic video: quantized frames (uint8 [num_frames, 1024] and [num_frames, 128]), and the class
    whose concept each frame shows (int64 [num_frames]; the number of classes for none)."""

    id: str
    labels: np.ndarray
    rgb: np.ndarray
    audio: np.ndarray
    frame_classes: np.ndarray


def _video_ids(count: int, seed: int) -> list[str]:
    """Distinct 4-character ids of videos 0..count-1: an affine bijection of the index mod 62**4."""
    rng = np.random.default_rng([seed, 3])
    multiplier = 1 + 2 * int(rng.integers(MAX_VIDEOS // 2))
    while multiplier % 31 == 0:  # coprime with 62**4 = 2**4 * 31**4
        multiplier += 2
    offset = int(rng.integers(MAX_VIDEOS))
    codes = (np.arange(count, dtype=np.int64) * multiplier + offset) % MAX_VIDEOS
    digits = codes[:, None] // len(_ID_ALPHABET) ** np.arange(_ID_LENGTH - 1, -1, -1) % len(_ID_ALPHABET)
    return ["".join(row) for row in _ID_ALPHABET[digits]]


def make_world(num_classes: int, seed: int, model: GenerativeModel = GenerativeModel()) -> World:
    """The world of a seed (see `sample_world`), after checking the settings."""
    if num_classes < 1:
        raise ConfigError(f"--num_classes={num_classes}: must be a positive integer")
    model.validate()
    return sample_world(num_classes, model, np.random.default_rng([seed, 0]))


def generate_videos(world: World, num_videos: int, seed: int,
                    model: GenerativeModel = GenerativeModel()) -> Iterator[SyntheticVideo]:
    """Yield the videos of a synthetic dataset in index order (deterministic for the arguments).

    `world` must be ``make_world(num_classes, seed, model)`` for the dataset of that seed.
    """
    if not 1 <= num_videos <= MAX_VIDEOS:
        raise ConfigError(f"--num_videos={num_videos}: must be between 1 and {MAX_VIDEOS}")
    for index, video_id in enumerate(_video_ids(num_videos, seed)):
        rng = np.random.default_rng([seed, 1, index])
        labels = sample_labels(world, model, rng)
        rgb, audio, frame_classes = render_video(world, model, labels,
                                                 int(rng.integers(model.min_length, model.max_length + 1)), rng)
        yield SyntheticVideo(video_id, labels, rgb, audio, frame_classes)


def segment_vocabulary(num_classes: int, seed: int, model: GenerativeModel = GenerativeModel()) -> np.ndarray:
    """The classes rated on segments (sorted int64): `segment_class_fraction` of them, at least one."""
    count = max(1, round(model.segment_class_fraction * num_classes))
    return np.sort(np.random.default_rng([seed, 5]).choice(num_classes, size=count, replace=False))


def rate_segments(video: SyntheticVideo, vocabulary: np.ndarray, model: GenerativeModel, seed: int,
                  index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rated (segment, class) pairs of video `index` (module docstring): (start times int64, classes
    int64, scores float32), sorted by start time then class."""
    rng = np.random.default_rng([seed, 4, index])
    starts = np.arange(0, len(video.frame_classes) - SEGMENT_SIZE + 1, SEGMENT_SIZE)
    shown = video.frame_classes[starts[:, None] + np.arange(SEGMENT_SIZE)]  # [segments, 5]
    pairs = []
    for label in np.intersect1d(video.labels, vocabulary):
        frames = np.count_nonzero(shown == label, axis=1)
        for candidates, limit, score in ((np.flatnonzero(frames >= 3), model.rated_positives, 1.0),
                                         (np.flatnonzero(frames == 0), model.rated_negatives, 0.0)):
            chosen = rng.choice(candidates, size=min(limit, len(candidates)), replace=False)
            pairs += [(int(starts[c]), int(label), score) for c in chosen]
    pairs.sort()
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64),
            np.array([p[2] for p in pairs], np.float32))


def encode_video(video: SyntheticVideo, video_level: bool, with_labels: bool,
                 segments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> bytes:
    """The serialized record of `video` in the official layout.

    Frame level: SequenceExample, context ``id`` (bytes) and ``labels`` (int64 list), feature lists ``rgb``
    and ``audio`` (one quantized byte string per frame). Video level: Example with ``id``, ``labels``,
    ``mean_rgb`` (1024 floats) and ``mean_audio`` (128 floats). Test files have no ``labels``.
    `segments`: (start times, classes, scores) of its rated segments, written as the 2019 release's
    ``segment_start_times``, ``segment_labels`` and ``segment_scores`` (frame level only).
    """
    context: dict = {"id": video.id.encode()}
    if with_labels:
        context["labels"] = video.labels
    if segments is not None:
        context.update(zip(("segment_start_times", "segment_labels", "segment_scores"), segments))
    # deterministic: map entries in key order; otherwise their order changes from one process to the next
    if video_level:
        context["mean_rgb"] = dequantize(video.rgb).mean(axis=0)
        context["mean_audio"] = dequantize(video.audio).mean(axis=0)
        return make_example(context).SerializeToString(deterministic=True)
    return make_sequence_example(context, {"rgb": [frame.tobytes() for frame in video.rgb],
                                           "audio": [frame.tobytes() for frame in video.audio]}
                                 ).SerializeToString(deterministic=True)


def split_sizes(num_videos: int) -> dict[str, int]:
    """Videos per split: 70% train, 20% validate, 10% test (each at least 1 when num_videos >= 3)."""
    validate = max(1, round(SPLIT_FRACTIONS[1] * num_videos)) if num_videos >= 3 else 0
    test = max(1, round(SPLIT_FRACTIONS[2] * num_videos)) if num_videos >= 3 else 0
    return {"train": num_videos - validate - test, "validate": validate, "test": test}


@dataclass
class DatasetSummary:
    """What `write_dataset` wrote."""

    files: dict[str, list[str]]
    videos: dict[str, int]
    frames: int
    train_class_counts: np.ndarray
    seconds: float
    rated_pairs: int = 0  # rated (segment, class) pairs written (segments=True)


def _vocabulary_csv(world: World, train_counts: np.ndarray) -> str:
    """vocabulary.csv in the official columns; Vertical1 is the topic, WikiDescription the modality."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(VOCABULARY_COLUMNS)
    for c in range(world.num_classes):
        writer.writerow([c, int(train_counts[c]), f"/synthetic/{c}", f"Class {c:04d}", "",
                         f"Topic {world.topic[c]:03d}", "", "",
                         f"Synthetic class with {_MODALITY_TEXT[int(world.modality[c])]}."])
    return out.getvalue()


def write_dataset(output_dir: str, num_videos: int, num_classes: int, seed: int, *, video_level: bool = False,
                  num_shards: int = 4, model: GenerativeModel = GenerativeModel(), overwrite: bool = False,
                  progress: bool = True, segments: bool = False) -> DatasetSummary:
    """Write a synthetic dataset: `output_dir`/{train,validate,test}NNNN.tfrecord and vocabulary.csv.

    Videos are split 70/20/10 in index order (they are independent draws); each split is cut into
    `num_shards` files of consecutive videos (fewer when the split has fewer videos). Test files have no
    labels. `segments`: validate and test records carry segment ratings, and segment_label_ids.csv
    lists the segment vocabulary (module docstring). `progress`: a progress bar, on a terminal only.
    `output_dir` may be any fsspec URL. Existing dataset files there are an error unless `overwrite`,
    which removes them first (other files are left alone).
    """
    if segments and video_level:
        raise ConfigError("--segments rates 5-frame segments of frame-level videos: drop --video_level")
    if num_shards < 1:
        raise ConfigError(f"--num_shards={num_shards}: must be a positive integer")
    if num_videos < 3:
        raise ConfigError(f"--num_videos={num_videos}: need at least 3 (one per split)")
    started = time.perf_counter()
    world = make_world(num_classes, seed, model)
    fs, root = fsspec.core.url_to_fs(output_dir)
    existing = sorted(p for split in SPLITS for p in fs.glob(f"{root.rstrip('/')}/{split}*.tfrecord"))
    if existing and not overwrite:
        raise DataError(f"{output_dir}: already holds {len(existing)} dataset file(s) such as "
                        f"{existing[0]}; choose another --output_dir or pass --overwrite")
    for path in existing:
        fs.rm(path)
    fs.makedirs(root, exist_ok=True)
    base = output_dir.rstrip("/")

    sizes = split_sizes(num_videos)
    routes: list[tuple[str, int]] = []  # (split, shard) of every video, in index order
    files: dict[str, list[str]] = {}
    for split in SPLITS:
        shards = min(num_shards, sizes[split])
        files[split] = [f"{base}/{split}{s:04d}.tfrecord" for s in range(shards)]
        for s, block in enumerate(np.array_split(np.arange(sizes[split]), shards)):
            routes += [(split, s)] * len(block)

    train_counts = np.zeros(num_classes, np.int64)
    frames = rated_pairs = 0
    vocabulary = segment_vocabulary(num_classes, seed, model) if segments else None
    writers = {(split, s): TFRecordWriter(path) for split in SPLITS for s, path in enumerate(files[split])}
    try:
        # a bar redrawn with carriage returns helps a person at a terminal, and fills a log with one long line
        with tqdm(total=num_videos, unit="video", desc="make-data", disable=not (progress and sys.stderr.isatty())
                  ) as bar:
            for index, (video, (split, shard)) in enumerate(zip(generate_videos(world, num_videos, seed, model),
                                                                routes)):
                rated = (rate_segments(video, vocabulary, model, seed, index)
                         if vocabulary is not None and split != "train" else None)
                rated_pairs += 0 if rated is None else len(rated[0])
                writers[split, shard].write(encode_video(video, video_level, split != "test", rated))
                frames += len(video.rgb)
                if split == "train":
                    train_counts[video.labels] += 1
                bar.update()
    finally:
        for writer in writers.values():
            writer.close()
    with fsspec.open(f"{base}/vocabulary.csv", "w") as f:
        f.write(_vocabulary_csv(world, train_counts))
    if vocabulary is not None:
        with fsspec.open(f"{base}/segment_label_ids.csv", "w") as f:  # the official file's layout
            f.write("Index\n" + "".join(f"{c}\n" for c in vocabulary))
    return DatasetSummary(files=files, videos=sizes, frames=frames, train_class_counts=train_counts,
                          seconds=time.perf_counter() - started, rated_pairs=rated_pairs)
