"""Per-row dynamic activation quantization (tilus.ops.rowquant) to int4 and float8_e4m3: the DSL
kernel in the interpreter and the torch fallback against a numpy reference of the rule (float32
arithmetic; ties to even by np.rint, e4m3 by ml_dtypes.float8_e4m3fn), with the packing checked
against tilus.dtypes.unpack, at K = 160 (not a multiple of the 128-wide tile)."""
import ml_dtypes
import numpy as np
import pytest
import torch

from tilus import dtypes
from tilus.errors import ArgumentError
from tilus.ops import rowquant

QMAX = {"int4": 7, "float8_e4m3": 448}


def rows_numpy(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(values of the codes [M, K] as float64, s [M]): s = absmax / Q, q = round(x * (Q / absmax))
    in float32, rounded by np.rint (int4) or to ml_dtypes.float8_e4m3fn; a zero row: 0, 0."""
    x = x.astype(np.float32)
    qmax = np.float32(QMAX[dtype])
    amax = np.abs(x).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, qmax / amax, np.float32(0)).astype(np.float32)
    t = (x * inv).astype(np.float32)
    q = np.rint(t) if dtype == "int4" else t.astype(ml_dtypes.float8_e4m3fn)
    return q.astype(np.float64), (amax / qmax).astype(np.float32).reshape(-1)


def values_of(q: torch.Tensor, dtype: str, k: int) -> np.ndarray:
    """The code values of quantize_rows' q: int4 unpacked from its bit stream per row."""
    if dtype == "float8_e4m3":
        return q.float().numpy().astype(np.float64)
    codes = dtypes.unpack(q.reshape(-1), dtypes.int4, q.shape[0] * k)
    return dtypes.int4.decode(np.asarray(codes)).reshape(q.shape[0], k).astype(np.float64)


def matmul_data(m=20, n=72, k=160):
    """Activations [m, k] float16 (a zero row, an outlier row) and a float weight [n, k]: the
    W4A4 and FP8 matmul tests' inputs."""
    torch.manual_seed(0)
    x = torch.randn(m, k).half()
    x[3] = 0
    x[5, 7] = 60000.0                                  # an outlier row
    return x, torch.randn(n, k)


def data(m=20, k=160):
    torch.manual_seed(0)
    x = torch.randn(m, k).half()
    x[3] = 0
    x[5, 7] = 60000.0                                  # an outlier row
    x[6, :] = torch.linspace(-3.5, 3.5, k).half()      # exact .5 ties of the int4 grid
    return x


@pytest.mark.parametrize("dtype", ["int4", "float8_e4m3"])
@pytest.mark.parametrize("engine", ["interpreter", "fallback"])
def test_quantize_rows_matches_the_rule(dtype, engine):
    x = data()
    q, s = rowquant.quantize_rows(x, engine=engine, dtype=dtype)
    want_q, want_s = rows_numpy(x.float().numpy(), dtype)
    np.testing.assert_array_equal(s.numpy(), want_s)
    got = values_of(q, dtype, x.shape[1])
    np.testing.assert_array_equal(got, want_q)
    assert (got[3] == 0).all() and np.abs(got).max() == QMAX[dtype]
    if dtype == "int4":
        assert q.dtype == torch.uint8 and q.shape == (20, 80) and got.min() >= -7
        # two codes a byte, even k in the low nibble
        lo = torch.from_numpy(want_q[:, 0::2].astype(np.int64)) & 0xF
        hi = torch.from_numpy(want_q[:, 1::2].astype(np.int64)) & 0xF
        assert torch.equal(q.long(), lo | (hi << 4))
    else:
        assert q.dtype == torch.float8_e4m3fn and not torch.isnan(q.float()).any()
    deq = got * s.numpy()[:, None]
    rows = [0, 1, 2, 4]
    err = np.abs(deq[rows] - x[rows].float().numpy()).max(axis=1)
    bound = s.numpy()[rows] * (0.5 if dtype == "int4" else 448 * 2 ** -4)
    assert (err <= bound * 1.0001).all()


@pytest.mark.parametrize("dtype", ["int4", "float8_e4m3"])
def test_bfloat16_rows(dtype):
    x = data().bfloat16()
    q, s = rowquant.quantize_rows(x, engine="interpreter", dtype=dtype)
    want_q, want_s = rows_numpy(x.float().numpy(), dtype)
    np.testing.assert_array_equal(values_of(q, dtype, x.shape[1]), want_q)
    np.testing.assert_array_equal(s.numpy(), want_s)


def test_arguments():
    with pytest.raises(ArgumentError, match="even"):
        rowquant.quantize_rows(torch.ones(2, 5).half(), dtype="int4")
    with pytest.raises(ArgumentError, match="dtype"):
        rowquant.quantize_rows(torch.ones(2, 4).half(), dtype="int2")
    with pytest.raises(ArgumentError, match="float16 or bfloat16"):
        rowquant.quantize_rows(torch.ones(2, 4), dtype="int4")
