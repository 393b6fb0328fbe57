"""Argument checks before a launch: >= 200 bad calls generated from a few signatures, each raising
ArgumentError that names the parameter, with a counting launch function proving nothing ran."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tilus.errors import ArgumentError
from tilus.runtime import KernelMetadata, LoadedKernel, Param, check_arguments, describe

S, P = "scalar", "pointer"

# --- three signatures --------------------------------------------------------------------------
VADD = KernelMetadata(
    name="vadd", entry="vadd", target="llvm",
    params=(Param("a", P, "float32", min_count="n"), Param("b", P, "float32", min_count="n"),
            Param("c", P, "float32", min_count="n"), Param("n", S, "int32")))

QMM = KernelMetadata(  # a CUDA kernel: a[m, k] fp16 @ packed uint4 w[k, n] with fp16 group scales
    name="qmm", entry="qmm", target="cuda", arch="sm_90",
    params=(Param("a", P, "float16", min_count="m * k"), Param("w", P, "uint4", min_count="k * n"),
            Param("scales", P, "float16", min_count="cdiv(k, 128) * n"),
            Param("c", P, "float16", min_count="m * n"),
            Param("m", S, "int32"), Param("n", S, "int32"), Param("k", S, "int32")),
    launch={"grid": ["cdiv(n, 128)", "cdiv(m, 64)", 1], "block": [128, 1, 1]})

MIXED = KernelMetadata(
    name="mixed", entry="mixed", target="llvm",
    params=(Param("x", P, "float8_e4m3", min_count="count"), Param("flag", S, "bool"),
            Param("scale", S, "float32"), Param("shift", S, "uint8"), Param("count", S, "int64"),
            Param("y", P, "int3", min_bytes="cdiv(count * 3, 8)"),
            Param("w4", P, "uint4", min_count="count", align=1),
            Param("idx", P, "int16", contiguous=False, align=2,
                  min_count=lambda env: env["count"] // 2)))


class FakeCupy:
    """A cupy-like CUDA array: only __cuda_array_interface__ and a device (no memory behind it)."""

    def __init__(self, typestr, shape, ptr=0x7F0000000000, strides=None, device=0):
        self.typestr, self.shape, self.ptr, self.strides, self.dev = typestr, shape, ptr, strides, device

    @property
    def __cuda_array_interface__(self):
        return {"shape": tuple(self.shape), "typestr": self.typestr, "data": (self.ptr, False),
                "strides": self.strides, "version": 3}

    def __dlpack_device__(self):
        return (2, self.dev)


M, N, K = 64, 256, 512


def qmm_args(**over):
    args = dict(a=FakeCupy("<f2", (M, K)), w=FakeCupy("|u1", (K * N // 2,)),
                scales=FakeCupy("<f2", (K // 128, N)), c=FakeCupy("<f2", (M, N)), m=M, n=N, k=K)
    args.update(over)
    return args


def vadd_args(**over):
    n = 100
    args = dict(a=torch.zeros(n), b=np.zeros(n, np.float32), c=torch.zeros(n), n=n)
    args.update(over)
    return args


def mixed_args(**over):
    count = 40
    args = dict(x=torch.zeros(count, dtype=torch.float8_e4m3fn), flag=True, scale=0.5, shift=3,
                count=count, y=np.zeros(15, np.uint8), w4=torch.zeros(20, dtype=torch.uint8),
                idx=torch.zeros(40, dtype=torch.int16)[::2])
    args.update(over)
    return args


SIGS = {"vadd": (VADD, vadd_args), "qmm": (QMM, qmm_args), "mixed": (MIXED, mixed_args)}


def _misaligned_torch(n, dtype=torch.float32, offset=1):
    return torch.zeros(n + offset, dtype=dtype)[offset:]


# --- bad-argument cases: (signature, param named in the error, description, overrides) --------------
def _cases():
    cases = []

    def add(sig, param, what, **over):
        cases.append(pytest.param(sig, param, over, id=f"{sig}-{param}-{what}"))

    junk = {"none": None, "list": [1.0, 2.0], "str": "a", "int": 3, "float": 1.5, "dict": {}}
    # vadd: every pointer, every way
    for p in "abc":
        for dt in (torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.uint8,
                   torch.bool, torch.int64, torch.float8_e4m3fn):
            add("vadd", p, f"torch-{dt}", **{p: torch.zeros(100, dtype=dt)})
        for dt in (np.float64, np.float16, np.int32, np.uint8, np.bool_, ml_dtypes.bfloat16,
                   ml_dtypes.float8_e5m2):
            add("vadd", p, f"numpy-{np.dtype(dt).name}", **{p: np.zeros(100, dt)})
        for name, v in junk.items():
            add("vadd", p, f"junk-{name}", **{p: v})
        add("vadd", p, "meta-device", **{p: torch.empty(100, device="meta")})
        add("vadd", p, "cuda-device", **{p: FakeCupy("<f4", (100,))})
        add("vadd", p, "too-small-torch", **{p: torch.zeros(99)})
        add("vadd", p, "too-small-numpy", **{p: np.zeros(99, np.float32)})
        add("vadd", p, "empty", **{p: torch.zeros(0)})
        add("vadd", p, "strided-torch", **{p: torch.zeros(200)[::2]})
        add("vadd", p, "strided-numpy", **{p: np.zeros(200, np.float32)[::2]})
        add("vadd", p, "transposed", **{p: torch.zeros(10, 10).t()})
        add("vadd", p, "byte-strided-numpy",
            **{p: np.zeros(101 * 4, np.uint8)[1:401].view(np.float32)})
        for off in (1, 2, 3):
            add("vadd", p, f"misaligned-torch-{off}", **{p: _misaligned_torch(100, offset=off)})
        add("vadd", p, "misaligned-numpy", **{p: np.zeros(102, np.float32)[1:101]})
        add("vadd", p, "overflow-int32-index",
            **{p: np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(2**31,),
                                                  strides=(0,))})
    # vadd: the scalar
    for name, v in {"too-big": 2**31, "too-small": -2**31 - 1, "float": 100.0, "str": "100",
                    "none": None, "bool": True, "tensor": torch.tensor(100),
                    "array": np.array(100), "np-float": np.float32(100), "huge": 10**30,
                    "complex": 1j}.items():
        add("vadd", "n", name, n=v)
    add("vadd", "a", "n-larger-than-buffers", n=101)
    add("vadd", "a", "n-negative", n=-1)
    # qmm: CUDA, sub-byte weights, devices
    for p, shape, ts in (("a", (M, K), "<f2"), ("scales", (K // 128, N), "<f2"),
                         ("c", (M, N), "<f2")):
        for bad in ("<f4", "<i2", "|u1", "|b1", "<u2"):
            add("qmm", p, f"dtype-{bad}", **{p: FakeCupy(bad, shape)})
        add("qmm", p, "other-gpu", **{p: FakeCupy(ts, shape, device=1)})
        add("qmm", p, "cpu-torch", **{p: torch.zeros(shape, dtype=torch.float16)})
        add("qmm", p, "cpu-numpy", **{p: np.zeros(shape, np.float16)})
        add("qmm", p, "misaligned", **{p: FakeCupy(ts, shape, ptr=0x7F0000000008)})
        add("qmm", p, "strided", **{p: FakeCupy(ts, shape, strides=(4 * shape[1], 2))})
        add("qmm", p, "column-major", **{p: FakeCupy(ts, shape, strides=(2, 2 * shape[0]))})
        add("qmm", p, "too-small", **{p: FakeCupy(ts, (shape[0] - 1, shape[1]))})
        add("qmm", p, "overflow", **{p: FakeCupy(ts, (2**31,))})
        for name, v in junk.items():
            add("qmm", p, f"junk-{name}", **{p: v})
    for bad in ("<f2", "<f4", "|i1", "<u2", "|b1"):
        add("qmm", "w", f"dtype-{bad}", w=FakeCupy(bad, (K * N // 2,)))
    add("qmm", "w", "unpacked", w=FakeCupy("|u1", (K * N // 2 - 1,)))
    add("qmm", "w", "other-gpu", w=FakeCupy("|u1", (K * N // 2,), device=3))
    add("qmm", "w", "overflow-4bit-index", w=FakeCupy("|u1", (2**30,)))
    add("qmm", "w", "misaligned", w=FakeCupy("|u1", (K * N // 2,), ptr=0x7F0000000001))
    add("qmm", "w", "cpu", w=np.zeros(K * N // 2, np.uint8))
    for s in "mnk":
        for name, v in {"too-big": 2**31, "negative-huge": -2**40, "float": 64.0, "none": None,
                        "str": "64", "bool": False}.items():
            add("qmm", s, name, **{s: v})
    add("qmm", "a", "k-too-big", k=K + 1)  # a is the first buffer that is then too small
    add("qmm", "a", "m-too-big", m=M + 1)
    add("qmm", "c", "m-too-big-for-c", m=M + 1, a=FakeCupy("<f2", (M + 1, K)))
    add("qmm", "w", "n-too-big", n=N + 2)
    # mixed: every scalar type, sub-byte buffers, a callable size, a non-contiguous-ok param
    for name, v in {"int": 1, "str": "yes", "none": None, "float": 1.0,
                    "array": np.array(True)}.items():
        add("mixed", "flag", name, flag=v)
    for name, v in {"str": "0.5", "none": None, "overflow": 1e39, "neg-overflow": -4e38,
                    "bool": True, "tensor": torch.tensor(0.5), "complex": 1 + 2j}.items():
        add("mixed", "scale", name, scale=v)
    for name, v in {"negative": -1, "too-big": 256, "float": 3.0, "bool": True,
                    "np-too-big": np.int64(300)}.items():
        add("mixed", "shift", name, shift=v)
    for name, v in {"too-big": 2**63, "float": 40.5, "none": None}.items():
        add("mixed", "count", name, count=v)
    add("mixed", "x", "count-too-big", count=41)
    add("mixed", "x", "uint16", x=torch.zeros(40, dtype=torch.uint16))
    add("mixed", "x", "float8_e5m2", x=torch.zeros(40, dtype=torch.float8_e5m2))
    add("mixed", "x", "int8", x=np.zeros(40, np.int8))
    add("mixed", "x", "misaligned", x=_misaligned_torch(40, torch.uint8))
    add("mixed", "y", "too-small", y=np.zeros(14, np.uint8))
    add("mixed", "y", "int8", y=np.zeros(15, np.int8))
    add("mixed", "y", "float32", y=np.zeros(15, np.float32))
    add("mixed", "y", "strided", y=np.zeros(30, np.uint8)[::2])
    add("mixed", "w4", "unpacked-ml_dtypes", w4=np.zeros(40, ml_dtypes.uint4))
    add("mixed", "w4", "unpacked-int8", w4=torch.zeros(40, dtype=torch.int8))
    add("mixed", "w4", "too-small", w4=torch.zeros(19, dtype=torch.uint8))
    add("mixed", "w4", "strided", w4=torch.zeros(40, dtype=torch.uint8)[::2])
    add("mixed", "idx", "too-small-callable", idx=torch.zeros(19, dtype=torch.int16))
    add("mixed", "idx", "odd-alignment", idx=_odd_int16())
    add("mixed", "idx", "uint16", idx=torch.zeros(20, dtype=torch.uint16))
    return cases


def _odd_int16():
    base = np.zeros(50, np.uint8)
    return base[1:41].view(np.int16)  # 20 int16 elements at an odd address


CASES = _cases()


def test_there_are_at_least_200_cases():
    assert len(CASES) >= 200, len(CASES)


def _counting(meta):
    calls = []
    kernel = LoadedKernel(meta, lambda *args: calls.append(args))
    return kernel, calls


@pytest.mark.parametrize("sig", sorted(SIGS))
def test_good_arguments_launch_once(sig):
    meta, make = SIGS[sig]
    kernel, calls = _counting(meta)
    args = make()
    kernel(*args.values())
    kernel(**args)
    assert len(calls) == 2 and kernel.launches == 2
    bound = check_arguments(meta, list(args.values()))
    assert bound.device_type == meta.device_type


@pytest.mark.parametrize("sig, param, over", CASES)
def test_bad_argument_raises_and_nothing_launches(sig, param, over):
    meta, make = SIGS[sig]
    kernel, calls = _counting(meta)
    args = make(**over)
    with pytest.raises(ArgumentError) as err:
        kernel(*args.values())
    assert repr(param) in str(err.value), str(err.value)
    assert calls == [] and kernel.launches == 0


@pytest.mark.parametrize("sig", sorted(SIGS))
def test_wrong_count(sig):
    meta, make = SIGS[sig]
    kernel, calls = _counting(meta)
    values = list(make().values())
    names = [p.name for p in meta.params]
    for drop in range(1, len(values) + 1):
        with pytest.raises(ArgumentError, match="missing") as err:
            kernel(*values[:-drop])
        assert all(n in str(err.value) for n in names[-drop:])
    for extra in (1, 2):
        with pytest.raises(ArgumentError, match="unexpected") as err:
            kernel(*values, *([0] * extra))
        assert ", ".join(names) in str(err.value)
    with pytest.raises(ArgumentError, match="unexpected keyword argument 'zz'"):
        kernel(*values, zz=1)
    with pytest.raises(ArgumentError, match=f"argument {names[0]!r} twice"):
        kernel(*values, **{names[0]: values[0]})
    assert calls == []


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers(max_value=-2**31 - 1), st.integers(min_value=2**31)))
def test_int32_range_property(v):
    kernel, calls = _counting(VADD)
    with pytest.raises(ArgumentError, match=r"argument 'n'.*out of range for int32"):
        kernel(**vadd_args(n=v))
    assert calls == []


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=4000))
def test_size_requirement_property(size):
    """A buffer of `size` elements passes exactly when size >= n."""
    kernel, calls = _counting(VADD)
    n = 2000
    args = vadd_args(n=n, a=torch.zeros(n), b=np.zeros(n, np.float32), c=torch.zeros(size))
    if size >= n:
        kernel(**args)
        assert len(calls) == 1
    else:
        with pytest.raises(ArgumentError, match="argument 'c'"):
            kernel(**args)
        assert calls == []


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["uint1", "int2", "uint3", "int4", "float5_e2m2", "float6_e3m2",
                        "uint7", "float7_e4m2"]), st.integers(min_value=1, max_value=1000))
def test_subbyte_buffer_size_property(dtype, count):
    nbits = int("".join(c for c in dtype.split("_")[0] if c.isdigit()))
    meta = KernelMetadata(name="k", entry="k", target="llvm",
                          params=(Param("buf", P, dtype, min_count="count", align=1),
                                  Param("count", S, "int32")))
    need = -(-count * nbits // 8)
    check_arguments(meta, (np.zeros(need, np.uint8), count))
    with pytest.raises(ArgumentError, match=rf"argument 'buf'.*{need} bytes"):
        check_arguments(meta, (np.zeros(need - 1, np.uint8), count))


def test_messages_say_what_was_expected():
    def msg(meta, **over):
        make = SIGS[meta.name][1]
        with pytest.raises(ArgumentError) as err:
            check_arguments(meta, list(make(**over).values()))
        return str(err.value)

    assert "expected float32, got torch float64" in msg(VADD, a=torch.zeros(100, dtype=torch.float64))
    assert "needs at least 100 float32 elements = 400 bytes (n with n=100), got 396 bytes" in \
        msg(VADD, c=torch.zeros(99))
    assert "contiguous" in msg(VADD, b=np.zeros(200, np.float32)[::2])
    assert "16-byte aligned" in msg(VADD, a=_misaligned_torch(100))
    assert "on cpu" in msg(VADD, a=FakeCupy("<f4", (100,))) and "cuda:0" in \
        msg(VADD, a=FakeCupy("<f4", (100,)))
    assert "same GPU" in msg(QMM, c=FakeCupy("<f2", (M, N), device=1))
    assert "packed uint4 bit stream" in msg(QMM, w=FakeCupy("<f2", (K * N // 2,)))
    assert "pack it with tilus.dtypes.pack" in msg(MIXED, w4=np.zeros(40, ml_dtypes.uint4))
    assert "32-bit indexing" in msg(QMM, a=FakeCupy("<f2", (2**31,)))
    assert "[0, 255]" in msg(MIXED, shift=256)


def test_grid_limits_and_empty_grid():
    kernel, calls = _counting(QMM)
    with pytest.raises(ArgumentError, match="grid dimension y"):
        big, k = 65536 * 64, 128  # grid y = cdiv(m, 64) = 65536
        kernel(**qmm_args(m=big, k=k, a=FakeCupy("<f2", (big, k)), c=FakeCupy("<f2", (big, N))))
    kernel(**qmm_args(m=0))  # nothing to do: no launch
    assert calls == []
    kernel(**qmm_args())
    assert len(calls) == 1


def test_describe_frameworks():
    t = describe(torch.zeros(3, 4)[:, 1:])
    assert (t.framework, t.dtype, t.shape, t.strides, t.device) == \
        ("torch", "float32", (3, 3), (4, 1), "cpu")
    assert not t.is_contiguous()
    a = describe(np.zeros((2, 3), ml_dtypes.float8_e4m3fn))
    assert (a.framework, a.dtype, a.itemsize, a.is_contiguous()) == ("numpy", "float8_e4m3", 1, True)
    c = describe(FakeCupy("<f2", (5,), device=2))
    assert (c.framework, c.dtype, c.device, c.nbytes) == ("cupy", "float16", "cuda:2", 10)
    assert describe(3) is None and describe([1, 2]) is None
