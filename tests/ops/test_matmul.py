"""tilus.ops.matmul: the DSL kernel run by the interpreter against dequantize + torch.matmul, for
every weight type, odd shapes, fp16/bf16, bias and split-k; dispatch and argument errors."""
from dataclasses import replace

import pytest
import torch

from tilus import dtypes
from tilus.errors import ArgumentError, DeviceMismatchError, TilusError
from tilus.ops import default_schedule, matmul, quantize, supported_weight_types
from tilus.ops.kernels import QuantMatmul

ALL = supported_weight_types()
TOL = {torch.float16: dict(rtol=4e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}


def _case(dtype, m, n, k, group, act=torch.float16, seed=0, bias=False, **kw):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.1
    qw = quantize(w, dtype, group_size=group, **kw)
    a = torch.randn(m, k, generator=g).to(act)
    b = (torch.randn(n, generator=g) * 0.5).to(act) if bias else None
    return a, qw, b


def _reference(a, qw, b):
    out = a.float() @ qw.dequantize(a.dtype).float().t()
    if b is not None:
        out = out + b.float()
    return out.to(a.dtype)


@pytest.mark.parametrize("dtype", ALL)
def test_every_type_interpreter_matches_reference(dtype):
    """M=3, N=24 (not a multiple of the 32-wide tile), K=64, groups of 32, fp16 and bf16."""
    for act in (torch.float16, torch.bfloat16):
        a, qw, b = _case(dtype, 3, 24, 64, 32, act=act, bias=act == torch.bfloat16)
        out = matmul(a, qw, b, engine="interpreter")
        assert out.dtype == act and out.shape == (3, 24)
        ref = _reference(a, qw, b)
        torch.testing.assert_close(out, ref, **TOL[act])
        torch.testing.assert_close(matmul(a, qw, b), ref, **TOL[act])        # CPU fallback


SHAPES = [  # (m, n, k, group): odd M, N not a multiple of 8/tiles, K not a multiple of block_k
    (1, 13, 40, None),
    (17, 37, 64, 32),
    (3, 130, 96, 32),
    (33, 8, 24, None),
]
FEW = ["uint4", "int4", "uint3", "int8", "float4_e2m1", "float6_e3m2", "float8_e4m3",
       "float8_e5m2", "uint1"]


@pytest.mark.parametrize("m,n,k,group", SHAPES)
@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_odd_shapes(m, n, k, group, act):
    for i, dtype in enumerate(FEW[:5] if act == torch.bfloat16 else FEW):
        a, qw, b = _case(dtype, m, n, k, group, act=act, seed=i, bias=i % 2 == 0)
        out = matmul(a, qw, b, engine="interpreter")
        torch.testing.assert_close(out, _reference(a, qw, b), **TOL[act])


@pytest.mark.parametrize("split_k,stages,block_k", [(2, 1, 32), (3, 1, 32), (1, 2, 64),
                                                   (1, 3, 32), (2, 4, 64), (2, 2, 128),
                                                   (1, 2, 96)])
def test_split_k_pipeline_and_schedules(split_k, stages, block_k):
    """block_k 64 spans two groups of 32, 128 four (K = 192 ends inside a k-tile), 96 three
    (stages 2, 1 and 4); a block_k that neither divides nor is a multiple of the group is
    rejected."""
    a, qw, b = _case("uint4", 17, 40, 192, 32, bias=True)
    ref = _reference(a, qw, b)
    sched = dict(block_m=16, block_n=128, block_k=block_k, split_k=split_k, warps=4,
                 stages=stages)
    with pytest.raises(TilusError, match="must divide group_size=64 or be a multiple of it"):
        matmul(*_case("uint4", 3, 40, 192, 64)[:2], engine="interpreter",
               schedule=dict(sched, block_k=96))
    torch.testing.assert_close(matmul(a, qw, b, engine="interpreter", schedule=sched), ref,
                               **TOL[torch.float16])
    big = dict(block_m=32, block_n=128, block_k=32, split_k=1, warps=8)
    torch.testing.assert_close(matmul(a, qw, b, engine="interpreter", schedule=big), ref,
                               **TOL[torch.float16])


def test_symmetric_uint_asymmetric_int_and_mixed_scale_dtype():
    for kw in (dict(dtype="uint4", symmetric=True), dict(dtype="int3", symmetric=False),
               dict(dtype="int4", scale_dtype=torch.bfloat16)):
        dtype = kw.pop("dtype")
        a, qw, b = _case(dtype, 5, 24, 64, 32, **kw)
        torch.testing.assert_close(matmul(a, qw, b, engine="interpreter"), _reference(a, qw, b),
                                   **TOL[torch.float16])
    kern = QuantMatmul("int4", 32, act="float16", scale="bfloat16", block_k=32)
    assert not kern.fast            # mixed dtypes dequantize in float32


def test_batched_leading_dims_and_empty():
    a, qw, b = _case("uint4", 6, 24, 32, 32)
    a3 = a.reshape(2, 3, 32)
    out = matmul(a3, qw, engine="interpreter")
    assert out.shape == (2, 3, 24)
    torch.testing.assert_close(out.reshape(6, 24), _reference(a, qw, None), **TOL[torch.float16])
    assert matmul(a[:0], qw, engine="interpreter").shape == (0, 24)
    assert matmul(a[:0], qw).shape == (0, 24)


def test_default_schedules():
    d = default_schedule(1, 4096, 4096, 128)
    assert d["block_m"] == 16 and d["split_k"] > 1 and d["block_k"] in (128, 256, 512)
    assert d["stages"] > 1
    big = default_schedule(1024, 4096, 4096, 128)
    assert big["block_m"] == 128 and big["split_k"] == 1
    assert default_schedule(3, 24, 40, 40, "interpreter")["block_k"] == 32
    # the pipeline fits in shared memory: 512-wide 8-bit stages are 80 KB, so two of them
    from tilus.ops.matmul import SMEM_LIMIT, stage_bytes

    for nbits in range(1, 9):
        for n, k in ((4096, 14336), (28672, 8192), (4096, 4096)):
            s = default_schedule(1, n, k, 128, nbits=nbits)
            assert s["stages"] * stage_bytes(16, s["block_k"], nbits) <= SMEM_LIMIT
    assert default_schedule(1, 4096, 14336, 128, nbits=8)["stages"] == 2
    assert default_schedule(1, 4096, 14336, 128, nbits=4)["stages"] == 4
    assert d["block_n"] == big["block_n"] == 128


def test_program_prints_and_reparses():
    from tilus.ir import parse

    for kern in (QuantMatmul("uint3", 32, zero_mode="tensor", has_bias=True, split_k=2,
                             stages=3),
                 QuantMatmul("float6_e5m0", 32, act="bfloat16", scale="float16")):
        prog = kern.program()
        assert parse(str(prog)) == prog


def test_bad_inputs():
    a, qw, b = _case("uint4", 3, 24, 64, 32)
    with pytest.raises(ArgumentError, match="last dimension must be K = 64"):
        matmul(torch.randn(3, 48).half(), qw)
    with pytest.raises(ArgumentError, match="float16 or bfloat16"):
        matmul(a.float(), qw)
    with pytest.raises(ArgumentError, match="bias must be a tensor of shape"):
        matmul(a, qw, torch.zeros(5).half())
    with pytest.raises(ArgumentError, match="QuantizedWeight"):
        matmul(a, torch.zeros(24, 64))
    with pytest.raises(ArgumentError, match="engine"):
        matmul(a, qw, engine="gpu")
    # a CPU activation with a weight elsewhere (a meta-device weight stands in for CUDA)
    with pytest.raises(DeviceMismatchError, match="on cpu but the quantized weight is on meta"):
        matmul(a, qw.to("meta"))
    with pytest.raises(DeviceMismatchError):
        matmul(a, qw, torch.zeros(24, device="meta").half())
    with pytest.raises(TilusError, match="needs CUDA"):
        matmul(a, qw, engine="compiled")
    assert issubclass(DeviceMismatchError, ArgumentError)



@pytest.mark.parametrize("engine", ["auto", "fallback", "interpreter"])
def test_wrong_dtype_tensors_are_argument_errors(engine):
    """QuantMatmul reads a, scales and offsets through raw byte pointers (tilus.void_p), so
    matmul checks their dtypes, for every engine, before anything runs."""
    a, qw, _ = _case("uint4", 3, 24, 64, 32, symmetric=False)
    mx = quantize(torch.randn(24, 64), "float4_e2m1", scheme="mx")
    cases = [(a.float(), qw, "a must be float16 or bfloat16"),
             (a, replace(qw, scales=qw.scales.float()), "scales must be float16 or bfloat16"),
             (a, replace(qw, offsets=qw.offsets.float()),
              "offsets must have the scales' dtype float16 or be uint8"),
             (a, replace(qw, scales=qw.scales.bfloat16()), "scales' dtype bfloat16"),
             (a, replace(mx, scales=mx.scales.half()), r"scales must be uint8 \(block scale"),
             (a, replace(mx, offsets=mx.scales), "block-scaled weights have no offsets")]
    for x, w, message in cases:
        with pytest.raises(ArgumentError, match=message):
            matmul(x, w, engine=engine)


def test_one_kernel_class_with_raw_pointers():
    """Every (act, scale, zero mode, scheme) is QuantMatmul itself, with the same parameters; a
    direct launch reads any contiguous buffer's bytes (here a uint8 view of the activations)."""
    import tilus
    from tilus.ops.matmul import kernel_for, weight_meta

    kerns = [QuantMatmul("uint4", 32), QuantMatmul("uint4", 32, act="bfloat16", zero_mode="int"),
             QuantMatmul("float4_e2m1", 16, scale="float8_e4m3", scheme="nvfp4")]
    raw = ("a", "w", "scales", "offsets", "bias", "c")
    for kern in kerns:
        assert type(kern) is QuantMatmul
        params = {p.name: p.dtype for p in kern.program().params}
        assert [n for n, t in params.items() if t == tilus.void_p] == list(raw)
        assert (params["workspace"], params["sema"], params["global_scale"]) == (
            ~tilus.float32, ~tilus.int32, tilus.float32)
    a, qw, _ = _case("uint4", 1, 8, 32, 32)
    kern = kernel_for(weight_meta(qw, a.dtype), "float16", False,
                      default_schedule(1, 8, 32, 32, "interpreter"))
    c = torch.zeros(1, 8, dtype=torch.float16)
    kern(1, 8, 32, a.view(torch.uint8), qw.data, qw.scales, qw.offsets, torch.zeros(1).half(), c,
         torch.zeros(1), torch.zeros(1, dtype=torch.int32), 1.0)
    assert torch.equal(c, matmul(a, qw, engine="interpreter"))


def test_kernel_parameter_checks():
    with pytest.raises(TilusError, match="block_n must be 128"):
        QuantMatmul("uint4", 32, block_n=64)
    with pytest.raises(TilusError, match="or be a multiple of it"):
        QuantMatmul("uint4", 64, block_k=96)
    with pytest.raises(TilusError, match="multiple of 32"):
        QuantMatmul("uint4", 64, block_k=48)
    with pytest.raises(TilusError, match="warps"):
        QuantMatmul("uint4", 32, block_m=16, warps=8)
    with pytest.raises(TilusError, match="float16 or bfloat16"):
        QuantMatmul("uint4", 32, act="float32")
    with pytest.raises(TilusError, match="stages"):
        QuantMatmul("uint4", 32, stages=0)
    assert dtypes.get("uint4") == QuantMatmul("uint4", 32).wtype


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None, derandomize=True)
@given(m=st.integers(1, 20), n=st.integers(1, 150), groups=st.integers(1, 3),
       group=st.sampled_from([32, 64]), dtype=st.sampled_from(ALL),
       act=st.sampled_from([torch.float16, torch.bfloat16]), bias=st.booleans(),
       split=st.sampled_from([1, 2]), stages=st.sampled_from([1, 2, 3]))
def test_property_random_shapes(m, n, groups, group, dtype, act, bias, split, stages):
    k = groups * group
    a, qw, b = _case(dtype, m, n, k, group, act=act, bias=bias)
    sched = dict(block_m=16, block_n=128, block_k=32 if stages == 1 else group, split_k=split,
                 warps=4, stages=stages)
    out = matmul(a, qw, b, engine="interpreter", schedule=sched)
    torch.testing.assert_close(out, _reference(a, qw, b), **TOL[act])


VARIANTS = [
    dict(wtype="uint4", act="float16", scale="float16", zero_mode="tensor", has_bias=True,
         block_m=16, block_n=128, block_k=256, split_k=4, warps=4, stages=4),
    dict(wtype="float6_e3m2", act="bfloat16", scale="bfloat16", block_m=128, block_n=128,
         block_k=32, warps=8, stages=3),
    dict(wtype="float8_e5m2", act="bfloat16", scale="float16", block_m=64, block_n=128,
         block_k=32),
    dict(wtype="uint3", act="float16", scale="bfloat16", zero_mode="const", zero_point=4.0,
         block_m=16, block_n=128, block_k=32, split_k=2),
]


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: f"{c['wtype']}-{c['act']}-{c['scale']}")
def test_gpu_schedules_verify_and_infer_layouts(cfg):
    """The programs of GPU-sized schedules verify and round-trip; where the layout-inference pass
    exists (tilus.transforms), every tensor gets a layout and the result still round-trips."""
    from tilus.ir import parse, verify

    cfg = dict(cfg)
    kern = QuantMatmul(cfg.pop("wtype"), 128, **cfg)
    prog = kern.program()
    verify(prog)
    assert parse(str(prog)) == prog
    try:
        from tilus.transforms import infer_layouts
    except ImportError:
        pytest.skip("tilus.transforms (layout inference) is not in this tree")
    laid = infer_layouts(prog)
    assert parse(str(laid)) == laid
