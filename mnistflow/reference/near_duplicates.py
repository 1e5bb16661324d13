"""Near-duplicate images by perceptual hash: copies shifted by a pixel or re-encoded.

Why not `imagehash.phash`: its 64-bit hash cannot tell MNIST digits apart (measured here: 114
of 2,000 test images share their exact hash with some *different* training image) and a
one-pixel shift moves it by 6-10 bits, so no threshold separates copies from distinct digits;
it also runs one PIL call per image (about 5 s for 70,000). This is the same DCT hash,
vectorised, with two changes that make it fit 28x28 digits: each image is first moved so its
centre of mass sits in the middle (a shifted copy then hashes identically), and the hash keeps
16x16 low frequencies (256 bits). On MNIST, distinct images lie at least 22 bits apart, while
shifted copies lie at 0 and JPEG re-encodes (quality 75) mostly within 12
(benchmarks/results/validate_speed.md).

Pairs within a distance are found by multi-index hashing: split the bits into d+1 chunks; two
hashes within d bits agree exactly on at least one chunk, so only images sharing a chunk value
are compared (a few million candidate pairs for 70,000 images instead of 2.4 billion).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from mnistflow.data.pixels import pixel_units
from mnistflow.reference.image_features import centres_of_mass

HASH_SIDE = 16  # low-frequency DCT coefficients kept per axis: 256-bit hashes
_DCT_SIDE = 32  # images are resampled to this before the DCT, as in the classic pHash
_CHUNK = 8192  # images per block: bounds memory whatever the split size


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """(N, 32) uint8: each image's 256-bit centred DCT hash, packed."""
    hashes = np.zeros((len(images), HASH_SIDE * HASH_SIDE // 8), dtype=np.uint8)
    if len(images) == 0:
        return hashes
    height, width = images.shape[1:3]
    resample_rows = _resampling_matrix(height, _DCT_SIDE)
    resample_columns = _resampling_matrix(width, _DCT_SIDE)
    for start in range(0, len(images), _CHUNK):
        block = _centred(pixel_units(images[start : start + _CHUNK]).astype(np.float32))
        block = resample_rows @ block @ resample_columns.T
        coefficients = scipy.fft.dct(scipy.fft.dct(block, axis=1), axis=2)
        low = coefficients[:, :HASH_SIDE, :HASH_SIDE].reshape(len(block), -1)
        hashes[start : start + len(block)] = np.packbits(
            low > np.median(low, axis=1, keepdims=True), axis=1
        )
    return hashes


def _resampling_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Linear interpolation from size_in to size_out samples, pixel centres aligned."""
    position = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    low = np.clip(np.floor(position).astype(int), 0, size_in - 1)
    high = np.clip(low + 1, 0, size_in - 1)
    weight = np.clip(position - np.floor(position), 0.0, 1.0)
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(size_out), high), weight)
    return matrix


def _centred(images: np.ndarray) -> np.ndarray:
    """Each image shifted by whole pixels so its centre of mass is nearest the middle."""
    height, width = images.shape[1:3]
    centres = centres_of_mass(images)
    shift_rows = np.rint((height - 1) / 2 - centres[:, 0]).astype(int)
    shift_columns = np.rint((width - 1) / 2 - centres[:, 1]).astype(int)
    moved = np.empty_like(images)
    for rows, columns in set(zip(shift_rows.tolist(), shift_columns.tolist(), strict=True)):
        chosen = (shift_rows == rows) & (shift_columns == columns)
        moved[chosen] = np.roll(images[chosen], (rows, columns), axis=(1, 2))
    return moved


def hamming_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits differing between paired packed hashes (same shape)."""
    return np.bitwise_count(_as_words(first) ^ _as_words(second)).sum(axis=1, dtype=np.int64)


def _as_words(hashes: np.ndarray) -> np.ndarray:
    """Packed hashes as 64-bit words (8x fewer XORs and popcounts than bytes)."""
    return np.ascontiguousarray(hashes).view(np.uint64)


def close_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """(P, 3) int64 rows (i, j, distance), i < j, of every pair within max_distance bits."""
    count, bytes_per_hash = hashes.shape
    bits = np.unpackbits(hashes, axis=1)
    edges = np.linspace(0, bytes_per_hash * 8, max_distance + 2).astype(int)
    candidates = [
        _sharing_pairs(_chunk_keys(bits[:, low:high]), count)
        for low, high in zip(edges[:-1], edges[1:], strict=True)
    ]
    # Candidates repeat across chunks; duplicates are dropped after the distance filter, on
    # the few pairs that remain (deduplicating millions of candidates first costs seconds).
    keys = np.concatenate(candidates) if candidates else np.zeros(0, np.int64)
    words = _as_words(hashes)
    distances = np.bitwise_count(words[keys // count] ^ words[keys % count]).sum(
        axis=1, dtype=np.int64
    )
    keys, first_seen = np.unique(keys[distances <= max_distance], return_index=True)
    distances = distances[distances <= max_distance][first_seen]
    first, second = keys // count, keys % count
    return np.stack([first, second, distances], axis=1)


def _chunk_keys(bits: np.ndarray) -> np.ndarray:
    """One integer per row for up to 64 bits."""
    packed = np.packbits(bits, axis=1)
    padded = np.zeros((len(bits), 8), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64).ravel()


def _sharing_pairs(keys: np.ndarray, count: int) -> np.ndarray:
    """i * count + j (i < j) for every pair of rows with equal keys, vectorised by offset."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pairs = []
    # Sorted, so a position equal to the one `offset` after it was equal at every smaller
    # offset too: each round only looks at the positions that matched in the round before.
    positions = np.arange(len(keys) - 1)
    offset = 1
    while len(positions):
        positions = positions[positions + offset < len(keys)]
        positions = positions[sorted_keys[positions + offset] == sorted_keys[positions]]
        first, second = order[positions], order[positions + offset]
        pairs.append(np.minimum(first, second).astype(np.int64) * count + np.maximum(first, second))
        offset += 1
    return np.concatenate(pairs) if pairs else np.zeros(0, np.int64)
