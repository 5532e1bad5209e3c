"""Synthetic face embeddings shared by the scale benchmarks (bench/cluster.py, bench/scale.py).

Both draw identity centres and faces the same way and deal faces into photos the same way; only how many
people there are and how large (and whether look-alike twins exist) differs, so that part stays in each bench.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def direction_sampler(rng: np.random.Generator, dim: int, spectrum_decay: float) -> tuple[Callable[[int], np.ndarray], np.ndarray]:
    """(directions(m) → (m, dim) unit vectors, shared mean direction).

    Directions come from a Gaussian with eigenvalues ~ i^-spectrum_decay in a random basis (effective dimension
    ~60 at 0.7), so different people have cosine mean ~0.04 once the mean is mixed into their centres."""
    lam = (np.arange(dim) + 1.0) ** -spectrum_decay
    scale = np.sqrt(lam / lam.sum()).astype(np.float32)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis = basis.astype(np.float32)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)

    def directions(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for i0 in range(0, m, 65536):  # chunks: keeps the generator's own memory small at 200k and more
            z = (rng.standard_normal((min(65536, m - i0), dim), dtype=np.float32) * scale) @ basis
            out[i0 : i0 + z.shape[0]] = z / np.linalg.norm(z, axis=1, keepdims=True)
        return out

    return directions, mean


def faces_around(centres: np.ndarray, size_arr: np.ndarray, n: int, rng: np.random.Generator,
                 directions: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X unit float32 (n, dim), identity int64 (n,), photo int64 (n,)) for people of ``size_arr`` faces each.

    Face = sqrt(rho) * identity centre + sqrt(1 - rho) * fresh direction, rho ~ U(0.35, 0.7) per person plus
    N(0, 0.15) per face (same-person cosine median ~0.5, a tail of bad photos). Faces are shuffled and dealt into
    photos of 1-4 faces, never two of one person in a photo."""
    ident = np.repeat(np.arange(size_arr.size), size_arr)[:n]
    rho_person = rng.uniform(0.35, 0.7, size_arr.size)
    rho = np.clip(rho_person[ident] + rng.normal(0, 0.15, n), 0.15, 0.92).astype(np.float32)
    X = directions(n)
    X *= np.sqrt(1 - rho)[:, None]
    X += np.sqrt(rho)[:, None] * centres[ident]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    perm = rng.permutation(n)
    X, ident = X[perm], ident[perm]
    photo = np.empty(n, np.int64)
    cap = rng.choice([1, 2, 3, 4], size=n, p=[0.7, 0.18, 0.08, 0.04])
    pid, members, want = 0, set(), cap[0]
    for i in range(n):
        if len(members) >= want or ident[i] in members:
            pid += 1
            members, want = set(), cap[pid]
        members.add(int(ident[i]))
        photo[i] = pid
    return np.ascontiguousarray(X), ident.astype(np.int64), photo
