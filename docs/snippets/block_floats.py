# bfloat8_b and bfloat4_b as tt-metal packs them: 16 values share one exponent, each keeps 7 or 3 magnitude bits.
import numpy as np

import ttjax
from ttjax.blockfloat import to_block_float
from ttjax.metrics import pcc

w = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
for dtype in (ttjax.bfloat8_b, ttjax.bfloat4_b):
    q = np.asarray(ttjax.typecast(w, dtype))  # rounded as the host packer rounds, decoded back to float
    stored = ttjax.pack_as_bfp_tiles(w, dtype)  # tt-metal's byte stream: exponents, then sign-magnitude codes
    print(f"{dtype.name}: {stored.nbytes / w.size:.4f} bytes a value, PCC {pcc(w, q):.5f}, "
          f"max |error| {np.abs(q - w).max():.4f}")
# One large value sets the block's exponent: its 15 neighbours keep 7 bits below it, so small ones flush to zero.
row = np.array([[100.0, 1.0, 0.3, 0.01] + [0.0] * 28] + [[0.0] * 32] * 31, np.float32)
print("a block with 100 in it:", np.asarray(ttjax.typecast(row, ttjax.bfloat8_b))[0, :4])
