"""ttjax.dump_tensor / load_tensor on their own: every format and layout back to the same tensor, and one sentence
for a file that is not a tensor. (Against ttnn itself, both ways, in tests/oracle/test_oracle.py.)"""

import struct

import jax.numpy as jnp
import numpy as np
import pytest

import ttjax
from ttjax import Layout, TensorSpec, TTJaxError
from ttjax.tensorbin import tensor_header

SHAPES = [(32, 32), (3, 40, 70), (1, 100), (7,), (2, 1, 33, 65)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,layout", [("bfloat16", "ROW_MAJOR"), ("bfloat16", "TILE"), ("float32", "ROW_MAJOR"),
                                          ("float32", "TILE"), ("bfloat8_b", "TILE"), ("bfloat4_b", "TILE")])
def test_round_trip(tmp_path, shape, dtype, layout):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32) * 3
    value = ttjax.as_tensor(x, getattr(ttjax, dtype)) if dtype.endswith("_b") else jnp.asarray(x, dtype)
    path = tmp_path / "t.tensorbin"
    ttjax.dump_tensor(path, value, layout=Layout[layout])
    blob = path.read_bytes()
    assert (8 + struct.unpack_from("<Q", blob)[0]) % 64 == 0  # the data starts on 64 bytes, as ttnn writes it
    back, spec = ttjax.read_tensor(path)
    assert (spec.shape, spec.dtype, spec.layout) == (shape, dtype, Layout[layout])
    if dtype.endswith("_b"):
        np.testing.assert_array_equal(np.asarray(back.codes), np.asarray(value.codes))
        np.testing.assert_array_equal(np.asarray(back.exps).view(np.uint8), np.asarray(value.exps).view(np.uint8))
    else:
        assert back.dtype == value.dtype
        np.testing.assert_array_equal(np.asarray(back, np.float32), np.asarray(value, np.float32))
    ttjax.dump_tensor(tmp_path / "again.tensorbin", back, layout=spec.layout)
    assert (tmp_path / "again.tensorbin").read_bytes() == blob


def test_bad_files_get_one_sentence(tmp_path):
    good = tmp_path / "good.tensorbin"
    ttjax.dump_tensor(good, jnp.ones((32, 32), jnp.bfloat16), layout=Layout.TILE)
    blob = good.read_bytes()
    cases = {
        "missing.tensorbin": None,
        "text.tensorbin": b"this is not a tensor file at all, just words",
        "short.tensorbin": b"\x01\x02",
        "truncated.tensorbin": blob[:-100],
        "header.tensorbin": struct.pack("<Q", 10**9) + blob[8:],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(TTJaxError) as e:
            ttjax.load_tensor(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    # a data type ttjax does not hold (uint32): named, with the ones it reads
    header = tensor_header(TensorSpec((32, 32), "uint32", layout=Layout.TILE), 4096)
    pad = -(-(8 + len(header)) // 64) * 64 - 8
    (tmp_path / "uint32.tensorbin").write_bytes(struct.pack("<Q", pad) + header + bytes(pad - len(header)) + bytes(4096))
    with pytest.raises(TTJaxError, match="data type uint32 .* ttjax reads bfloat16, float32, bfloat8_b, bfloat4_b"):
        ttjax.load_tensor(tmp_path / "uint32.tensorbin")
    with pytest.raises(TTJaxError, match="must have .tensorbin extension"):
        ttjax.dump_tensor(tmp_path / "x.bin", jnp.ones((2, 2), jnp.float32))
    with pytest.raises(TTJaxError, match="bfloat16, float32 or a block-float"):
        ttjax.dump_tensor(tmp_path / "x.tensorbin", jnp.ones((2, 2), jnp.int32))
    with pytest.raises(TTJaxError, match="TILE layout only"):
        ttjax.dump_tensor(tmp_path / "x.tensorbin", ttjax.as_tensor(np.ones((32, 32), np.float32), ttjax.bfloat8_b),
                          layout=Layout.ROW_MAJOR)
