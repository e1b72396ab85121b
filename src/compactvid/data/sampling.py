"""From a video's frames to the model's input: frame sampling, the halves of data augmentation, and the
per-frame L2 normalization, as the original does them.

The original samples in the model graph after normalizing all 300 padded frames; sampling indices first
and then dequantizing and normalizing only the sampled frames gives the same values, because both steps
act on each frame independently.
"""

from __future__ import annotations

import numpy as np
import torch

from compactvid.data.yt8m import DEQUANTIZE_BIAS, DEQUANTIZE_SCALE

# tf.nn.l2_normalize's default: x / sqrt(max(sum(x**2), epsilon)).
L2_EPSILON = 1e-12


def sample_frame_indices(rng: np.random.Generator, num_frames: int, iterations: int, n_bagging: int,
                         random_frames: bool = True) -> np.ndarray:
    """int64 ``[n_bagging, iterations]`` frame indices into a video of `num_frames` real frames.

    random_frames=True: each index uniform among the real frames, with replacement (the original's
    SampleRandomFrames). False: `iterations` consecutive frames from a uniform random start in
    ``[0, max(num_frames - iterations, 0)]``, the last frame repeated when the video is shorter
    (SampleRandomSequence). Each of the `n_bagging` rows is drawn independently. A video without frames
    gets indices 0 (the caller gives it zero frames, as the original's zero padding did).
    """
    if num_frames <= 0:
        return np.zeros((n_bagging, iterations), dtype=np.int64)
    if random_frames:
        return rng.integers(0, num_frames, size=(n_bagging, iterations), dtype=np.int64)
    starts = rng.integers(0, max(num_frames - iterations, 0) + 1, size=(n_bagging, 1), dtype=np.int64)
    return np.minimum(starts + np.arange(iterations, dtype=np.int64), num_frames - 1)


def augmentation_halves(num_frames: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) of the examples `--data_augmentation` makes of one video: the first
    ceil(n/2) frames and the last floor(n/2). A video of fewer than 2 frames has no second half and
    stays one example (its only frame, or none)."""
    if num_frames < 2:
        return [(0, num_frames)]
    middle = (num_frames + 1) // 2
    return [(0, middle), (middle, num_frames)]


def dequantize_normalize_(values: torch.Tensor) -> torch.Tensor:
    """In place: quantized values (as float32 0..255, ``[..., dim]``) -> dequantized, then L2-normalized
    over the last dim; returns `values`.

    Same operations in the same order as the original (float32 multiply, then add, then
    x * rsqrt(max(sum(x**2), 1e-12))); results agree with it to float32 rounding of the sum.
    """
    values.mul_(float(DEQUANTIZE_SCALE)).add_(float(DEQUANTIZE_BIAS))
    return l2_normalize_(values)


def l2_normalize_(values: torch.Tensor) -> torch.Tensor:
    """In place: ``x * rsqrt(max(sum(x**2), 1e-12))`` over the last dim (tf.nn.l2_normalize); returns it."""
    squares = torch.linalg.vecdot(values, values, dim=-1).unsqueeze(-1)
    return values.mul_(squares.clamp_(min=L2_EPSILON).rsqrt_())
