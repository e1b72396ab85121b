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


def sample_frame_indices(uniforms: np.ndarray, starts: np.ndarray, counts: np.ndarray, iterations: int,
                         random_frames: bool = True) -> np.ndarray:
    """int64 ``[E, n_bagging, iterations]`` frame indices for E examples: example e samples the real frames
    ``[starts[e], starts[e] + counts[e])`` of its video (the whole video, or a half under data augmentation).

    random_frames=True: each index uniform in the range, with replacement (the original's
    SampleRandomFrames). False: `iterations` consecutive frames from a uniform random first frame in
    ``[start, start + max(count - iterations, 0)]``, the last frame repeated when the range is shorter
    (SampleRandomSequence). Each of the `n_bagging` rows is drawn independently. An empty range gets
    indices `start` (the caller gives it zero frames, as the original's zero padding did).

    `uniforms`: the draws, float64 in [0, 1), ``[E, n_bagging, iterations]`` (random frames) or
    ``[E, n_bagging, 1]`` (windows); the caller draws many examples' at once, since a call to the
    generator costs more than the numbers it returns. ``floor(u * count)`` is uniform over
    ``0 .. count - 1`` (the float64 product stays below count for any count under 2**52).
    `starts`, `counts`: int64 ``[E]``.
    """
    starts, counts = starts[:, None, None], counts[:, None, None]
    if random_frames:
        return starts + (uniforms * counts).astype(np.int64)
    first = (uniforms * (np.maximum(counts - iterations, 0) + 1)).astype(np.int64)
    return starts + np.minimum(first + np.arange(iterations), np.maximum(counts - 1, 0))


def frame_view(frames: np.ndarray) -> np.ndarray:
    """uint8 frames ``[..., size]`` (each frame's bytes contiguous, any other strides) seen as ``[...]``
    void scalars of `size` bytes, in the same memory.

    Gathering frames between such views (``out_view[i] = frame_view(frames)[rows]``) moves each frame
    with one memcpy, where uint8 fancy indexing would move it byte by byte: several times faster.
    """
    return frames.view(np.dtype((np.void, frames.shape[-1])))[..., 0]


def augmentation_halves(num_frames: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) of the examples `--data_augmentation` makes of one video: the first
    ceil(n/2) frames and the last floor(n/2). A video of fewer than 2 frames has no second half: both
    examples are the whole video (so that every video makes exactly two, as in the original's batches)."""
    if num_frames < 2:
        return [(0, num_frames), (0, num_frames)]
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
