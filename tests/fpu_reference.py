"""A plain, slow reference of the Tensix matrix engine's matmul (the model in ttjax/matrix_engine.py's docstring),
for the tests only: numpy loops over output tiles, K tiles, fidelity phases and the 16 MVMULs of a tile in
the LLK's order, each MVMUL summing its 16 products one by one.

It is written apart from ttjax.matrix_engine on purpose: operand bits are cut with float64 arithmetic (floor of
the value over a power of two), not bit masks, and rounding to nearest with ties away is floor(v + 1/2)
on the magnitude; so a wrong mask or a wrong rounding in the jitted path fails the comparison.
"""

from __future__ import annotations

import numpy as np

TILE, FACE = 32, 16
PHASES = {"LoFi": (0,), "HiFi2": (0, 1), "HiFi3": (0, 1, 2), "HiFi4": (0, 1, 2, 3)}
# The 16 MVMULs of one 32x32x32 tile (llk_math_matmul.h): (SrcB face, SrcA face), each covering 8 rows of
# its output face twice. Face f of a tile: rows 16 * (f // 2).., cols 16 * (f % 2)..; B = in0 [m, k], A = in1 [k, n].
MVMUL_ORDER = [(0, 0), (0, 1), (2, 0), (2, 1), (1, 2), (1, 3), (3, 2), (3, 3)]


def _exponent(v: np.ndarray) -> np.ndarray:
    """floor(log2 |v|) for nonzero v (0 where v is 0)."""
    _, e = np.frexp(np.where(v == 0, 1.0, v))
    return e - 1


def keep_bits(v: np.ndarray, bits: int) -> np.ndarray:
    """v truncated to its top `bits` significant bits (the implicit 1 included), float64."""
    v = np.asarray(v, np.float64)
    step = np.exp2(_exponent(v) - (bits - 1))
    return np.where(v == 0, 0.0, np.sign(v) * np.floor(np.abs(v) / step) * step)


def round_away(v: np.ndarray, bits: int) -> np.ndarray:
    """v rounded to `bits` significant bits, to nearest with ties away from zero, float64."""
    v = np.asarray(v, np.float64)
    step = np.exp2(_exponent(v) - (bits - 1))
    return np.where(v == 0, 0.0, np.sign(v) * np.floor(np.abs(v) / step + 0.5) * step)


def flush(v: np.ndarray) -> np.ndarray:
    return np.where(np.abs(v) < 2.0**-126, np.copysign(0.0, v), v)


def src_a(w, phase):  # weights: 5 significant bits, then the next 5
    hi = keep_bits(w, 5)
    return hi if phase & 1 == 0 else keep_bits(w, 10) - hi


def src_b(x, phase):  # activations: 7 significant bits, then the next 4
    hi = keep_bits(x, 7)
    return hi if phase & 2 == 0 else keep_bits(x, 11) - hi


def matmul_reference(x, w, fidelity: str, fp32_dest_acc_en: bool, weight_is_float32: bool = False) -> np.ndarray:
    """x [M, K] @ w [K, N] as the engine computes it; float32 values of Dst [M, N]."""
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    m, k = x.shape
    n = w.shape[1]
    tf32 = fp32_dest_acc_en and weight_is_float32
    x = flush(keep_bits(x, 11 if tf32 else 8)).astype(np.float32)
    w = flush(keep_bits(w, 11 if tf32 else 8) if weight_is_float32 else w).astype(np.float32)
    pad = lambda a, rows, cols: np.pad(a, ((0, -a.shape[0] % rows), (0, -a.shape[1] % cols)))  # noqa: E731
    x, w = pad(x, TILE, TILE), pad(w, TILE, TILE)
    out = np.zeros((x.shape[0], w.shape[1]), np.float32)
    face = lambda t, f: t[16 * (f // 2) : 16 * (f // 2) + 16, 16 * (f % 2) : 16 * (f % 2) + 16]  # noqa: E731
    for mt in range(x.shape[0] // TILE):
        for nt in range(w.shape[1] // TILE):
            dst = np.zeros((TILE, TILE), np.float32)
            for kt in range(x.shape[1] // TILE):
                xt = x[mt * TILE : (mt + 1) * TILE, kt * TILE : (kt + 1) * TILE]
                wt = w[kt * TILE : (kt + 1) * TILE, nt * TILE : (nt + 1) * TILE]
                for phase in PHASES[fidelity]:
                    b_all = src_b(xt, phase).astype(np.float32)
                    a_all = src_a(wt, phase).astype(np.float32)
                    for bf, af in MVMUL_ORDER:
                        b, a = face(b_all, bf), face(a_all, af)
                        rows, cols = 16 * (bf // 2), 16 * (af % 2)
                        for half in (0, 8):  # one MVMUL: 8 rows of SrcB times the 16x16 SrcA face
                            s = b[half : half + 8, 0, None] * a[None, 0, :]
                            for i in range(1, FACE):
                                s = s + b[half : half + 8, i, None] * a[None, i, :]  # float32: rounds to nearest even
                            d = dst[rows + half : rows + half + 8, cols : cols + 16]
                            total = d + s
                            if not fp32_dest_acc_en:
                                total = flush(round_away(round_away(total, 11), 8)).astype(np.float32)
                            dst[rows + half : rows + half + 8, cols : cols + 16] = total
            out[mt * TILE : (mt + 1) * TILE, nt * TILE : (nt + 1) * TILE] = dst
    return out[:m, :n]
