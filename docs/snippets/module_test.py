# A module test as tt-metal writes one: the reference module (Hugging Face's LlamaRMSNorm) and ttjax's op on the
# same weights and input, compared by PCC and elementwise (PCC cannot see a scale), in float32 and in bfloat16.
import jax.numpy as jnp
import numpy as np
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

import ttjax
from ttjax.metrics import comp_pcc

rng = np.random.default_rng(0)
x = rng.standard_normal((1, 128, 576)).astype(np.float32)
reference = LlamaRMSNorm(576, eps=1e-5)
reference.weight.data = torch.from_numpy(rng.uniform(0.5, 1.5, 576).astype(np.float32))
golden = reference(torch.from_numpy(x)).detach().numpy()

for dtype, pcc_min, atol in ((jnp.float32, 0.9999, 1e-5), (jnp.bfloat16, 0.999, 0.05)):
    out = ttjax.rms_norm(jnp.asarray(x, dtype), jnp.asarray(reference.weight.detach().numpy(), dtype), epsilon=1e-5)
    out = np.asarray(out, np.float32)
    passed, value = comp_pcc(golden, out, pcc_min)
    close = np.allclose(out, golden, atol=atol, rtol=atol)
    print(f"rms_norm {jnp.dtype(dtype).name:8}: PCC {value:.6f} (needs {pcc_min}) {'PASS' if passed else 'FAIL'}, "
          f"elementwise within {atol}: {close}")
    assert passed and close
