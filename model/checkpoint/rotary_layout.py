"""The rotary layout difference between checkpoints, handled once at load time.

The model uses Meta's layout: each head's rows of wq/wk hold interleaved pairs
(x0, x1), (x2, x3), ... rotated together. GGUF (llama.cpp permutes on conversion) and Meta's
consolidated checkpoints are already in it. Hugging Face checkpoints use rotate-half: a head's
first half rows pair with its second half. `hf_to_meta` moves HF rows into Meta's order
(tt-metal's reverse_permute); `meta_to_hf` is its inverse, HF's own conversion permute.
"""

import numpy as np


def hf_to_meta(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of an HF q_proj/k_proj weight [n_heads * head_dim, in] into Meta's interleaved order."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def meta_to_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of hf_to_meta."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
