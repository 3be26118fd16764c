# PCC, as tt-metal's comp_pcc computes it, and what it can and cannot see. For noise of relative size s,
# PCC = 1 / sqrt(1 + s^2): 0.99 is 14% noise, 0.999 is 4.5%, 0.9999 is 1.4%. A scale or an offset it cannot see.
import numpy as np

from ttjax.metrics import comp_pcc, pcc

rng = np.random.default_rng(0)
golden = rng.standard_normal(100_000)
for s in (0.142, 0.045, 0.014):
    print(f"noise {s:5.1%} of the signal: PCC {pcc(golden, golden + s * rng.standard_normal(golden.size)):.4f}")
ok, value = comp_pcc(golden, 1.01 * golden + 0.5, threshold=0.9999)
print(f"1% too large and shifted by 0.5: PCC {value:.6f}, passes 0.9999: {ok}; check values too (allclose)")
