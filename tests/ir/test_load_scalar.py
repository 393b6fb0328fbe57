"""load_scalar: the text form (``e: int64 = load_scalar(...)``), its round trip and the verifier's
rules (dtype, rank, scope of the defined scalar)."""
from __future__ import annotations

import pytest

from tilus.errors import TilusParseError, VerificationError
from tilus.ir import parse

TEXT = """kernel k(n: int32, t: ~int64, x: ~float32)
    blocks [n] warps 1
{
    %gt: global[int64, (n, 2)] = global_view(ptr=t, strides=[2, 1])
    %gx: global[float32, (n, 32)] = global_view(ptr=x, strides=[32, 1])
    e: int64 = load_scalar(%gt, offsets=[blockIdx.x, 1])
    if (e >= int64(0)) {
        %v: register[float32, (1, 32)] = load_global(%gx, offsets=[e, 0])
        store_global(%gx, %v, offsets=[blockIdx.x, 0])
    }
}
"""


def test_round_trip():
    p = parse(TEXT)
    assert str(p) == TEXT
    assert parse(str(p)) == p


def _error(old: str, new: str) -> str:
    assert old in TEXT
    with pytest.raises((VerificationError, TilusParseError)) as e:
        parse(TEXT.replace(old, new, 1))
    return str(e.value)


def test_dtype_must_match_the_tensor():
    assert "must be a Var of" in _error("e: int64 = load_scalar", "e: int32 = load_scalar")


def test_offsets_one_per_dimension():
    assert "1 offsets for the rank-2 tensor" in _error("offsets=[blockIdx.x, 1]",
                                                       "offsets=[blockIdx.x]")


def test_sub_byte_tensors_are_rejected():
    text = TEXT.replace("t: ~int64", "t: ~uint4").replace("global[int64", "global[uint4") \
        .replace("e: int64", "e: uint4").replace("int64(0)", "uint4(0)")
    with pytest.raises(VerificationError, match="a scalar load reads"):
        parse(text)


def test_needs_a_scalar_output():
    assert "load_scalar is written name: <dtype> = load_scalar(...)" in _error(
        "e: int64 = load_scalar(%gt, offsets=[blockIdx.x, 1])",
        "load_scalar(%gt, offsets=[blockIdx.x, 1])")


def test_the_scalar_is_read_only_and_scoped():
    assert "not declared by let" in _error("    if (e >= int64(0)) {",
                                           "    e = int64(3)\n    if (e >= int64(0)) {")
    inner = TEXT.replace("    e: int64 = load_scalar(%gt, offsets=[blockIdx.x, 1])\n", "") \
        .replace("    if (e >= int64(0)) {\n",
                 "    if (n > 0) {\n        e: int64 = load_scalar(%gt, offsets=[blockIdx.x, 1])\n")
    inner = inner.replace("    }\n}\n", "    }\n    let f: int64 = e\n}\n")
    with pytest.raises(TilusParseError, match="undefined variable 'e'"):
        parse(inner)
