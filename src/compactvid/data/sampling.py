"""From a video's frames to the model's input: frame sampling, the halves of data augmentation, and the
per-frame L2 normalization, as the original does them.

The original samples in the model graph after normalizing all 300 padded frames; sampling indices first
and then dequantizing and normalizing only the sampled frames gives the same values, because both steps
act on each frame independently.

Sampling and gathering run once per video on hundreds of frames, so they are numba kernels (compiled on
first use, cached on disk); the gather copies each sampled frame from where the record holds it
(`compactvid.data.wire` locates them) into the examples' frames.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from compactvid.data.yt8m import DEQUANTIZE_BIAS, DEQUANTIZE_SCALE

# tf.nn.l2_normalize's default: x / sqrt(max(sum(x**2), epsilon)).
L2_EPSILON = 1e-12


@numba.njit(cache=True, nogil=True)
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
    `starts`, `counts`: int64 ``[E]`` (arrays or tuples). Compiled: a video's 300 indices in ~1 us.
    """
    examples, bags = uniforms.shape[0], uniforms.shape[1]
    if len(starts) < examples or len(counts) < examples or uniforms.shape[2] < (iterations if random_frames else 1):
        raise ValueError("sample_frame_indices: fewer starts, counts or uniforms than the examples need")
    out = np.empty((examples, bags, iterations), dtype=np.int64)
    for e in range(examples):
        start, count = starts[e], counts[e]
        for b in range(bags):
            if random_frames:
                for i in range(iterations):
                    out[e, b, i] = start + np.int64(uniforms[e, b, i] * count)
            else:
                first = np.int64(uniforms[e, b, 0] * (max(count - iterations, 0) + 1))
                for i in range(iterations):
                    out[e, b, i] = start + min(first + i, max(count - 1, 0))
    return out


@numba.njit(cache=True, nogil=True)
def gather_frames(out: np.ndarray, buffer: np.ndarray, offsets: np.ndarray, strides: np.ndarray,
                  sizes: np.ndarray, num_frames: int, rows: np.ndarray) -> None:
    """``out[..., columns of feature f] = frame rows[...] of feature f``, for every feature f.

    `out`: uint8 ``[*rows.shape, sum(sizes)]``, C-contiguous (the slots of a batch); `buffer`: uint8
    ``[length]``, where frame r of feature f is ``buffer[offsets[f] + r * strides[f]:][:sizes[f]]`` (a
    record's bytes as `compactvid.data.wire` locates them); `rows`: int64 frame indices, C-contiguous.
    Compiled, with unsigned indices so that each frame's copy is vectorized: about 3x numpy's gather.
    Raises IndexError (before writing) if a row or a frame lies outside `num_frames` or `buffer`, and
    ValueError if `out` is not the shape above: compiled code does not check indices.
    """
    flat_rows = rows.reshape(rows.size)
    if len(offsets) < len(sizes) or len(strides) < len(sizes) or out.shape[-1] != sizes.sum() or (
            out.size != flat_rows.size * out.shape[-1]):
        raise ValueError("gather_frames: `out` must be [*rows.shape, sum(sizes)] (and one offset, stride per size)")
    for k in range(flat_rows.size):
        if flat_rows[k] < 0 or flat_rows[k] >= num_frames:
            raise IndexError("gather_frames: a frame index is outside the video")
    for f in range(len(sizes)):
        if num_frames and (offsets[f] < 0 or offsets[f] + (num_frames - 1) * strides[f] + sizes[f] > len(buffer)):
            raise IndexError("gather_frames: the frames lie outside the buffer")
    flat_out = out.reshape(out.size)
    dim = np.uint64(out.shape[-1])
    column = np.uint64(0)
    for f in range(len(sizes)):
        size, stride, offset = np.uint64(sizes[f]), np.uint64(strides[f]), np.uint64(offsets[f])
        for k in range(flat_rows.size):
            source = offset + np.uint64(flat_rows[k]) * stride
            target = np.uint64(k) * dim + column
            for i in range(size):
                flat_out[target + i] = buffer[source + i]
        column += size


@numba.njit(cache=True, nogil=True)
def gather_sampled_frames(out: np.ndarray, buffer: np.ndarray, offsets: np.ndarray, strides: np.ndarray,
                          sizes: np.ndarray, num_frames: int, uniforms: np.ndarray, starts: np.ndarray,
                          counts: np.ndarray, iterations: int, random_frames: bool) -> None:
    """`sample_frame_indices` (from `uniforms`, `starts`, `counts`, `iterations`, `random_frames`), then
    `gather_frames` of those frames into `out` (uint8 ``[E, n_bagging, iterations, sum(sizes)]``), in one
    compiled call."""
    gather_frames(out, buffer, offsets, strides, sizes, num_frames,
                  sample_frame_indices(uniforms, starts, counts, iterations, random_frames))


def augmentation_halves(num_frames: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(starts, counts) of the frame ranges of the examples `--data_augmentation` makes of one video: the
    first ceil(n/2) frames and the last floor(n/2). A video of fewer than 2 frames has no second half: both
    examples are the whole video (so that every video makes exactly two, as in the original's batches)."""
    if num_frames < 2:
        return (0, 0), (num_frames, num_frames)
    middle = (num_frames + 1) // 2
    return (0, middle), (middle, num_frames - middle)


def dequantize_normalize_(values: torch.Tensor, has_frames: torch.Tensor | None = None) -> torch.Tensor:
    """In place: quantized values (as float32 0..255, ``[..., dim]``) -> dequantized, then L2-normalized
    over the last dim; returns `values`. `has_frames` (bool, broadcastable to ``[..., 1]``): False for the
    examples of a video without frames, whose frames become zeros (see `l2_normalize_`).

    Same operations in the same order as the original (float32 multiply, then add, then
    x * rsqrt(max(sum(x**2), 1e-12))); results agree with it to float32 rounding of the sum.
    """
    values.mul_(float(DEQUANTIZE_SCALE)).add_(float(DEQUANTIZE_BIAS))
    return l2_normalize_(values, has_frames)


def l2_normalize_(values: torch.Tensor, has_frames: torch.Tensor | None = None) -> torch.Tensor:
    """In place: ``x * rsqrt(max(sum(x**2), 1e-12))`` over the last dim (tf.nn.l2_normalize); returns it.

    Where `has_frames` (bool, broadcastable to ``[..., 1]``) is False the frames become zeros: a video without
    frames is a valid record, and the original pads every video with zeros after dequantization, so its
    sampler picks padding whose normalization stays zero (not the dequantized value of a byte, -1.99 for 0).
    Folded into the normalization's scale, this costs no pass over the frames.
    """
    squares = torch.linalg.vecdot(values, values, dim=-1).unsqueeze(-1)
    scale = squares.clamp_(min=L2_EPSILON).rsqrt_()
    if has_frames is not None:
        scale.mul_(has_frames)
    return values.mul_(scale)
