"""Layout inference: the examples infer without annotations, every register tensor gets a layout
of its shape over warps*32 threads, dot operands get mma fragments, memory tiles get 16-byte runs,
annotations win and propagate, conflicts name the instruction and both layouts, the result prints
and re-parses exactly, and the interpreter computes the same results on it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes as D
from tilus.errors import LayoutInferenceError, RegistryError
from tilus.ir import inst as I
from tilus.ir import parse, verify
from tilus.ir.builder import ProgramBuilder
from tilus.ir.functor import instructions
from tilus.ir.layout import (column_spatial, local, mma_m16n8k16_f16_a, mma_m16n8k16_f16_b,
                             mma_m16n8k16_f16_c, mma_m16n8k32_s8_a, mma_m16n8k32_s8_b,
                             mma_m16n8k32_s8_c, replicate, row_major, spatial, swizzle_128b)
from tilus.ir.layout.register import RegisterLayout
from tilus.registry import Registry
from tilus.transforms import LayoutInference, check_layouts, default_layout, infer_layouts
from tilus.transforms.layout_inference import (broadcast_operand_layout, mma_dot_layouts,
                                               view_layout)

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str):
    module_name = f"tilus_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def example_kernels():
    return {
        "vector_add": load_example("vector_add").VecAdd(256),
        "softmax": load_example("softmax").Softmax(16, 128),
        "matmul_fp16": load_example("matmul_fp16").MatmulFp16(),
        "matmul_lowbit": load_example("matmul_lowbit").MatmulLowBit("int4"),
        "matmul_lowbit_uint3": load_example("matmul_lowbit").MatmulLowBit("uint3"),
        "matmul_splitk": load_example("matmul_splitk").MatmulSplitK(),
    }


def register_tensors(program):
    seen = {}
    for inst in instructions(program):
        for t in ([inst.output] if inst.HAS_OUTPUT else []) + [x for x in inst.operands()]:
            if isinstance(t, tilus.ir.Tensor) and t.scope == "register":
                seen.setdefault(t.name, t)
    return seen


def only(program, cls):
    found = [x for x in instructions(program) if isinstance(x, cls)]
    assert len(found) == 1, found
    return found[0]


# ----- the examples ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(example_kernels()))
def test_examples_infer_without_annotations(name):
    program = example_kernels()[name].program()
    assert all(t.layout is None for t in register_tensors(program).values())
    inferred = infer_layouts(program)
    verify(inferred)
    check_layouts(inferred)
    tensors = register_tensors(inferred)
    assert tensors
    for t in tensors.values():
        assert isinstance(t.layout, RegisterLayout)
        assert tuple(t.layout.shape) == tuple(t.shape)
        assert t.layout.num_threads == inferred.warps * 32
    for inst in instructions(inferred):
        for t in [getattr(inst, "output", None)] + list(inst.operands()):
            if isinstance(t, tilus.ir.Tensor) and t.scope == "shared":
                assert t.layout is not None and tuple(t.layout.shape) == tuple(t.shape)
    assert parse(str(inferred)) == inferred
    assert str(parse(str(inferred))) == str(inferred)


def test_matmul_fp16_dot_operands_are_mma_fragments():
    p = infer_layouts(example_kernels()["matmul_fp16"].program())   # 32x32x16, 4 warps
    dot = only(p, I.DotInst)
    # 2 x 2 warps, each a 16x16 tile of C: two m16n8 instructions along n
    assert dot.c.layout == local(1, 2) * spatial(2, 2) * mma_m16n8k16_f16_c()
    assert dot.output.layout == dot.c.layout
    assert dot.a.layout == local(1, 1) * (spatial(2, 1) * replicate(2)) * mma_m16n8k16_f16_a()
    assert dot.b.layout == local(1, 2) * (replicate(2) * spatial(1, 2)) * mma_m16n8k16_f16_b()
    # the operands come from load_shared: they get the fragments directly
    loads = [x for x in instructions(p) if isinstance(x, I.LoadSharedInst)]
    assert {x.output.layout for x in loads} == {dot.a.layout, dot.b.layout}


def test_matmul_lowbit_dot_and_dequantization_chain():
    p = infer_layouts(example_kernels()["matmul_lowbit"].program())   # 16x32x32, 4 warps
    dot = only(p, I.DotInst)
    assert dot.c.layout == local(1, 1) * spatial(1, 4) * mma_m16n8k16_f16_c()
    assert dot.a.layout == local(1, 2) * (spatial(1, 1) * replicate(4)) * mma_m16n8k16_f16_a()
    assert dot.b.layout == local(2, 1) * (replicate(1) * spatial(1, 4)) * mma_m16n8k16_f16_b()
    # the B fragment flows back through mul and cast to the int4 codes; the [1, bn] scale gets
    # the fragment reduced over k
    mul = only(p, I.BinaryInst)
    scale = next(x for x in mul.operands() if x.shape[0] == 1)
    assert scale.layout == dot.b.layout.reduce(0)
    cast = next(x for x in instructions(p) if isinstance(x, I.CastInst) and x.output.dtype is D.float16
                and x.x.dtype is D.int4)
    assert cast.x.layout == dot.b.layout


def test_matmul_splitk_loads_take_the_fragments_and_the_accumulator_layout():
    p = infer_layouts(example_kernels()["matmul_splitk"].program())
    dot = only(p, I.DotInst)
    assert dot.c.layout == local(1, 2) * spatial(2, 2) * mma_m16n8k16_f16_c()
    loads = {x.output.name: x.output.layout for x in instructions(p) if isinstance(x, I.LoadGlobalInst)}
    assert dot.c.layout in loads.values()       # the partial sum read back from C
    assert dot.a.layout in loads.values() and dot.b.layout in loads.values()


def test_softmax_reductions_replicate_over_the_reduced_threads():
    p = infer_layouts(example_kernels()["softmax"].program())
    t = only(p, I.LoadGlobalInst).output
    assert t.layout == local(4, 1) * spatial(4, 32) * local(1, 4)
    assert t.layout.vector_length() == 4        # 16 bytes of float32
    for red in (x for x in instructions(p) if isinstance(x, I.ReduceInst)):
        assert red.output.layout == red.x.layout.reduce(1)


# ----- memory defaults ------------------------------------------------------------------------

def load_program(dtype, shape, warps, annotate=None):
    b = ProgramBuilder("load")
    n = b.param("n", D.int32)
    src, dst = b.param("src", ~dtype), b.param("dst", ~dtype)
    gs = b.global_view(src, dtype, [n, n])
    gd = b.global_view(dst, dtype, [n, n])
    b.warps = warps
    x = b.load_global(gs, [0, 0], shape, name="x", layout=annotate)
    b.store_global(gd, x, [0, 0])
    return b.finish()


def test_fp16_16x64_load_by_4_warps_gives_8_contiguous_elements_per_thread():
    p = infer_layouts(load_program(D.float16, [16, 64], 4))
    x = only(p, I.LoadGlobalInst).output
    assert x.layout.vector_length() == 8
    assert x.layout == spatial(16, 8) * local(1, 8)
    runs = x.layout.contiguous_runs(5)
    assert runs == [(0, (0, 40), 8)]


@pytest.mark.parametrize("dtype,shape,warps,vec", [
    # [3, 40]: no thread count divides 5 columns of 16 bytes, so one thread reads whole rows
    (D.float32, [16, 128], 4, 4), (D.float16, [64, 64], 4, 8), (D.int8, [32, 64], 4, 16),
    (D.uint4, [32, 64], 2, 32), (D.float16, [2, 8], 4, 8), (D.float32, [256], 4, 4),
    (D.float32, [1024], 4, 4), (D.float16, [3, 40], 1, 40), (D.float32, [1], 8, 1),
])
def test_default_layouts_cover_the_tile_with_every_thread(dtype, shape, warps, vec):
    layout = default_layout(shape, dtype, warps * 32)
    assert tuple(layout.shape) == tuple(shape)
    assert layout.num_threads == warps * 32
    assert layout.vector_length() == vec
    # every element is held by someone
    held = set(int(i) for i in layout.index_table().ravel())
    assert held == set(range(int(np.prod(shape))))


def test_small_tile_replicates_over_extra_threads():
    layout = default_layout([2, 8], D.float16, 128)     # 16 elements, 128 threads
    assert layout == replicate(64) * spatial(2, 1) * local(1, 8)
    assert len(layout.owners((1, 3))) == 64


def test_rank0_reduction_result_is_replicated_everywhere():
    b = ProgramBuilder("red0")
    p_ = b.param("p", ~D.float32)
    g = b.global_view(p_, D.float32, [64])
    x = b.load_global(g, [0], [64], name="x")
    s = b.reduce("sum", x, 0, name="s")
    b.print_tensor(s)
    b.warps = 2
    p = infer_layouts(b.finish())
    red = only(p, I.ReduceInst)
    assert red.output.shape == () and red.output.layout == replicate(64)
    assert parse(str(p)) == p


# ----- dot --------------------------------------------------------------------------------------

def dot_program(m, n, k, ab, c_dtype, warps, annotate_c=None):
    b = ProgramBuilder("dot")
    pa, pb, pc = b.param("a", ~ab), b.param("b", ~ab), b.param("c", ~c_dtype)
    ga, gb = b.global_view(pa, ab, [m, k]), b.global_view(pb, ab, [k, n])
    gc = b.global_view(pc, c_dtype, [m, n])
    b.warps = warps
    acc = b.register_tensor(c_dtype, [m, n], init=0, name="acc", layout=annotate_c)
    xa = b.load_global(ga, [0, 0], [m, k], name="xa")
    xb = b.load_global(gb, [0, 0], [k, n], name="xb")
    b.dot(xa, xb, acc, out=acc)
    b.store_global(gc, acc, [0, 0])
    return b.finish()


def test_int8_dot_uses_m16n8k32_fragments():
    p = infer_layouts(dot_program(32, 64, 64, D.int8, D.int32, 4))
    dot = only(p, I.DotInst)
    assert dot.c.layout == local(1, 4) * spatial(2, 2) * mma_m16n8k32_s8_c()
    assert dot.a.layout == local(1, 2) * (spatial(2, 1) * replicate(2)) * mma_m16n8k32_s8_a()
    assert dot.b.layout == local(2, 4) * (replicate(2) * spatial(1, 2)) * mma_m16n8k32_s8_b()


def _check_warp_tiling(a: RegisterLayout, b: RegisterLayout, c: RegisterLayout, k: int) -> None:
    """Per warp: the rows of C it holds are the rows of A it holds (all k), the columns of C are
    the columns of B (all k) -- what each warp's mma instructions need."""
    def held(layout, warp):
        out = set()
        for t in range(warp * 32, warp * 32 + 32):
            out |= {layout.index(t, s) for s in range(layout.local_size)}
        return out
    for w in range(c.num_threads // 32):
        cs, as_, bs = held(c, w), held(a, w), held(b, w)
        rows, cols = {i for i, _ in cs}, {j for _, j in cs}
        assert as_ == {(i, kk) for i in rows for kk in range(k)}
        assert bs == {(kk, j) for j in cols for kk in range(k)}
        assert cs == {(i, j) for i in rows for j in cols}


@pytest.mark.parametrize("m,n,k,warps", [(32, 32, 16, 4), (64, 32, 32, 4), (16, 64, 16, 8),
                                         (128, 128, 32, 8), (16, 8, 16, 4), (16, 16, 16, 1)])
def test_mma_tilings_give_each_warp_whole_rows_and_columns(m, n, k, warps):
    options = mma_dot_layouts(m, n, k, D.float16, D.float32, warps * 32)
    assert options
    for a, b, c in options:
        assert c.num_threads == a.num_threads == b.num_threads == warps * 32
        _check_warp_tiling(a, b, c, k)


def test_tiny_dot_replicates_warps():
    a, b, c = mma_dot_layouts(16, 8, 16, D.float16, D.float32, 128)[0]
    assert c == replicate(4) * mma_m16n8k16_f16_c()


def test_dot_falls_back_to_simt_when_mma_does_not_fit():
    for m, n, k, dtype in ((12, 32, 16, D.float16), (32, 32, 16, D.float32)):
        p = infer_layouts(dot_program(m, n, k, dtype, D.float32, 4))
        dot = only(p, I.DotInst)
        c = dot.c.layout
        assert dot.a.layout == c.reduce(1) * local(1, k)
        assert dot.b.layout == local(k, 1) * c.reduce(0)
        assert all(x.layout.num_threads == 128 for x in (dot.a, dot.b, dot.c))


def test_annotated_accumulator_picks_the_matching_warp_grid():
    c = local(1, 4) * spatial(4, 1) * mma_m16n8k16_f16_c()     # 4 x 1 warps, not the preferred 2 x 2
    p = infer_layouts(dot_program(64, 32, 16, D.float16, D.float32, 4, annotate_c=c))
    dot = only(p, I.DotInst)
    assert dot.c.layout == c
    assert dot.a.layout == local(1, 1) * spatial(4, 1) * mma_m16n8k16_f16_a()
    assert dot.b.layout == local(1, 4) * replicate(4) * mma_m16n8k16_f16_b()


def test_annotated_non_mma_accumulator_gives_a_simt_dot():
    c = default_layout([32, 32], D.float32, 128)
    p = infer_layouts(dot_program(32, 32, 16, D.float16, D.float32, 4, annotate_c=c))
    dot = only(p, I.DotInst)
    assert dot.c.layout == c and dot.a.layout == c.reduce(1) * local(1, 16)


# ----- annotations and conflicts ----------------------------------------------------------------

def add_program(la=None, lb=None, warps=4, n=256):
    b = ProgramBuilder("vadd")
    pa, pb, pc = b.param("a", ~D.float32), b.param("b", ~D.float32), b.param("c", ~D.float32)
    ga, gb, gc = (b.global_view(p, D.float32, [n]) for p in (pa, pb, pc))
    b.warps = warps
    x = b.load_global(ga, [0], [n], name="x", layout=la)
    y = b.load_global(gb, [0], [n], name="y", layout=lb)
    t = b.binary("add", x, y, name="t")
    b.store_global(gc, t, [0])
    return b.finish()


def test_annotation_is_kept_and_propagated():
    layout = local(2) * spatial(128)
    p = infer_layouts(add_program(lb=layout))
    tensors = register_tensors(p)
    assert tensors["x"].layout == tensors["y"].layout == tensors["t"].layout == layout


def test_annotation_through_the_dsl_is_kept():
    class Annotated(tilus.Script):
        def __call__(self, n: tilus.int32, a: ~tilus.float32, c: ~tilus.float32):
            self.attrs.blocks = 1
            self.attrs.warps = 2
            ga = self.global_view(a, dtype=tilus.float32, shape=[n])
            gc = self.global_view(c, dtype=tilus.float32, shape=[n])
            x = self.load_global(ga, offsets=[0], shape=[128])
            self.annotate_layout(x, tilus.ir.layout.column_spatial(64) * tilus.ir.layout.local(2))
            y = self.exp(x)
            self.store_global(gc, y, offsets=[0])

    p = infer_layouts(Annotated().program())
    assert {t.layout for t in register_tensors(p).values()} == {column_spatial(64) * local(2)}


def test_conflicting_annotations_name_the_instruction_and_both_layouts():
    la, lb = local(2) * spatial(128), spatial(128) * local(2)
    with pytest.raises(LayoutInferenceError) as e:
        infer_layouts(add_program(la=la, lb=lb))
    msg = str(e.value)
    assert "%t = add(%x, %y)" in msg
    assert str(la) in msg and str(lb) in msg
    assert "(annotated)" in msg


def test_a_conflict_in_a_dsl_kernel_names_the_users_file_and_line():
    class Conflicting(tilus.Script):
        def __call__(self, n: tilus.int32, a: ~tilus.float32, c: ~tilus.float32):
            self.attrs.blocks = 1
            self.attrs.warps = 4
            ga = self.global_view(a, dtype=tilus.float32, shape=[n])
            x = self.load_global(ga, offsets=[0], shape=[256])
            y = self.load_global(ga, offsets=[256], shape=[256])
            self.annotate_layout(x, local(2) * spatial(128))
            self.annotate_layout(y, spatial(128) * local(2))
            t = x + y
            self.store_global(self.global_view(c, dtype=tilus.float32, shape=[n]), t, offsets=[0])

    with pytest.raises(LayoutInferenceError) as e:
        infer_layouts(Conflicting().program())
    msg = str(e.value)
    assert str(local(2) * spatial(128)) in msg and str(spatial(128) * local(2)) in msg
    assert f"{__file__}:" in msg and "t = x + y" in msg
    written_at = int(msg.split(f"{__file__}:")[1].split(":")[0])
    source = Path(__file__).read_text().splitlines()[written_at - 1]
    assert source.strip() == "t = x + y", source


def test_annotation_with_the_wrong_thread_count_is_rejected():
    with pytest.raises(LayoutInferenceError, match="64 threads.*128"):
        infer_layouts(add_program(la=spatial(64) * local(4)))
    with pytest.raises(LayoutInferenceError, match="shape"):
        infer_layouts(add_program(la=spatial(128) * local(4)))


def test_conflict_inside_a_loop_is_found():
    # acc is written in the loop by an add whose other operand is annotated differently
    b = ProgramBuilder("loop")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [1024])
    b.warps = 1
    acc = b.register_tensor(D.float32, [64], init=0.0, name="acc", layout=spatial(32) * local(2))
    with b.for_range(0, 4, name="i") as i:
        x = b.load_global(ga, [i * 64], [64], name="x", layout=local(2) * spatial(32))
        b.binary("add", acc, x, out=acc)
    b.store_global(ga, acc, [0])
    with pytest.raises(LayoutInferenceError, match=r"add\(%acc, %x\)"):
        infer_layouts(b.finish())


def test_tensor_written_in_a_loop_keeps_one_layout():
    b = ProgramBuilder("loop")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [1024])
    b.warps = 1
    acc = b.register_tensor(D.float32, [64], init=0.0, name="acc")
    with b.for_range(0, 4, name="i") as i:
        x = b.load_global(ga, [i * 64], [64], name="x", layout=local(2) * spatial(32))
        y = b.unary("exp", x, name="y")
        b.binary("add", acc, y, out=acc)
    b.store_global(ga, acc, [0])
    p = infer_layouts(b.finish())
    assert register_tensors(p)["acc"].layout == local(2) * spatial(32)


# ----- shape instructions and view ---------------------------------------------------------------

def test_view_scales_the_per_thread_run_by_the_bit_ratio():
    u8 = spatial(32, 8) * local(1, 4)
    assert view_layout(u8, D.uint8, [32, 64], D.uint4) == spatial(32, 8) * local(1, 8)
    assert view_layout(spatial(32, 8) * local(1, 8), D.uint4, [32, 32], D.uint8) == u8
    assert view_layout(spatial(8, 4) * local(1, 2), D.float16, [8, 4], D.uint32) == spatial(8, 4)
    # a thread holding one 4-bit element cannot keep whole bytes
    assert view_layout(spatial(8, 8), D.uint4, [8, 4], D.uint8) is None


def test_view_propagates_both_ways():
    b = ProgramBuilder("viewer")
    pw = b.param("w", ~D.uint8)
    gw = b.global_view(pw, D.uint8, [64, 64])
    b.warps = 1
    raw = b.load_global(gw, [0, 0], [32, 16], name="raw", layout=spatial(8, 4) * local(4, 4))
    codes = b.view(raw, D.uint4, [32, 32], name="codes")
    f = b.cast(codes, D.float16, name="f")
    b.print_tensor(f)
    li = LayoutInference()
    p = li.run(b.finish())
    assert register_tensors(p)["codes"].layout == spatial(8, 4) * local(4, 8)
    assert li.redistributing_views == []
    # backward: the consumer fixes the codes' layout, the bytes follow
    b = ProgramBuilder("viewer")
    pw = b.param("w", ~D.uint8)
    gw = b.global_view(pw, D.uint8, [64, 64])
    b.warps = 1
    raw = b.load_global(gw, [0, 0], [32, 16], name="raw")
    codes = b.view(raw, D.uint4, [32, 32], name="codes")
    f = b.cast(codes, D.float16, name="f")
    b.print_tensor(f)
    b.binary("add", f, b.register_tensor(D.float16, [32, 32], name="z",
                                         layout=spatial(32, 1) * local(1, 32)), name="s")
    p = infer_layouts(b.finish())
    assert register_tensors(p)["raw"].layout == spatial(32, 1) * local(1, 16)


def test_lowbit_view_feeding_a_dot_is_reported_as_redistributing():
    li = LayoutInference()
    li.run(example_kernels()["matmul_lowbit"].program())
    assert li.redistributing_views == ["%codes = view(%raw)"]


def shape_ops_program():
    b = ProgramBuilder("shapes")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [64, 64])
    b.warps = 2
    x = b.load_global(ga, [0, 0], [16, 32], name="x")
    tr = b.transpose(x, name="tr")
    b.store_global(ga, tr, [0, 0])
    r = b.reduce("max", x, 1, keepdim=True, name="r")
    sq = b.squeeze(r, 1, name="sq")
    us = b.unsqueeze(sq, 0, name="us")
    bc = b.broadcast(us, [32, 16], name="bc")
    b.store_global(ga, bc, [0, 0])
    rep = b.repeat(x, [2, 1], name="rep")
    b.store_global(ga, rep, [0, 0])
    cond = b.binary("gt", x, 0.0, name="cond")
    w = b.where(cond, x, r, name="w")
    b.store_global(ga, w, [0, 0])
    return b.finish()


def test_shape_instructions():
    p = infer_layouts(shape_ops_program())
    t = register_tensors(p)
    x = t["x"].layout
    assert t["tr"].layout == x.permute([1, 0])
    assert t["r"].layout == x.reduce(1)
    assert t["sq"].layout == x.reduce(1, keepdim=False)
    assert t["us"].layout == t["sq"].layout.reshape([1, 16])
    assert t["rep"].layout == local(2, 1) * x
    assert t["cond"].layout == t["w"].layout == x
    assert broadcast_operand_layout(t["bc"].layout, [1, 16]) == t["us"].layout
    check_layouts(p)
    assert parse(str(p)) == p


# ----- shared layouts ---------------------------------------------------------------------------

def test_shared_defaults_slices_and_annotations():
    b = ProgramBuilder("smem")
    pa = b.param("a", ~D.float16)
    ga = b.global_view(pa, D.float16, [128, 128])
    b.warps = 4
    wide = b.shared_tensor(D.float16, [32, 64], name="wide")
    big = b.shared_tensor(D.float16, [32, 64], name="big")
    part = b.slice_shared(big, [0, 16], [32, 16], name="part")
    mine = b.shared_tensor(D.float16, [16, 16], name="mine", layout=row_major(16, 16, pad=8))
    b.copy_async(ga, wide, [0, 0])
    b.copy_async(ga, big, [0, 0])
    b.copy_async(ga, mine, [0, 0])
    b.store_global(ga, b.load_shared(part, name="xp"), [0, 0])
    b.store_global(ga, b.load_shared(wide, name="xw"), [0, 0])
    b.store_global(ga, b.load_shared(mine, name="xm"), [0, 0])
    p = infer_layouts(b.finish())
    layouts = {x.output.name: x.output.layout for x in instructions(p)
               if isinstance(x, (I.AllocateSharedInst, I.SliceSharedInst))}
    assert layouts["wide"] == swizzle_128b(row_major(32, 64), D.float16)
    assert layouts["big"] == row_major(32, 64)
    assert layouts["part"].strides == (64, 1)
    assert layouts["mine"] == row_major(16, 16, pad=8)
    assert parse(str(p)) == p


# ----- semantics --------------------------------------------------------------------------------

def _run_both(kernel, make_args):
    program, runtime = kernel.instantiate(*make_args())
    inferred = infer_layouts(program)
    out = []
    for prog in (program, inferred):
        args = make_args()
        _, rt = kernel.instantiate(*args)
        tilus.interpret(prog, *rt)
        out.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    return out


@pytest.mark.parametrize("name", ["vector_add", "softmax", "matmul_fp16", "matmul_lowbit",
                                  "matmul_splitk"])
def test_interpreter_gives_the_same_results_on_the_inferred_program(name):
    kernel = example_kernels()[name]

    def make_args():
        g = torch.Generator().manual_seed(0)
        if name == "vector_add":
            n = 300
            return (n, torch.randn(n, generator=g), torch.randn(n, generator=g), torch.zeros(n))
        if name == "softmax":
            return (20, 100, torch.randn(20, 100, generator=g), torch.zeros(20, 100))
        if name == "matmul_fp16":
            return (40, 36, 50, torch.randn(40, 50, generator=g).half(),
                    torch.randn(50, 36, generator=g).half(), torch.zeros(40, 36).half())
        if name == "matmul_lowbit":
            a, w, s, _ = load_example("matmul_lowbit").make_inputs("int4", 20, 40, 64, 32)
            return (20, 40, 64, a, w, s, torch.zeros(20, 40).half())
        return (40, 40, 64, torch.randn(40, 64, generator=g).half(),
                torch.randn(64, 40, generator=g).half(), torch.zeros(40, 40),
                torch.zeros(4, dtype=torch.int32))

    before, after = _run_both(kernel, make_args)
    for x, y in zip(before, after):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
    assert any(isinstance(x, torch.Tensor) and x.abs().sum() > 0 for x in after)


# ----- random programs ------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.ir.strategies import programs  # noqa: E402


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs())
def test_random_programs_infer_and_round_trip(program):
    try:
        inferred = infer_layouts(program)
    except LayoutInferenceError as e:
        # only a dot's fixed operand layouts can clash with each other through elementwise
        # instructions (that needs a layout conversion); the dot tries every candidate first
        assert " = dot(" in str(program) and "layout conflict at `" in str(e)
        return
    verify(inferred)
    check_layouts(inferred)
    assert parse(str(inferred)) == inferred
    # inference is idempotent: the layouts it wrote are annotations it keeps
    assert infer_layouts(inferred) == inferred


def test_a_registered_rule_takes_part(monkeypatch):
    from tilus.transforms import layout_inference as li

    wanted = spatial(32) * local(2)

    def print_wants(inst, solver):
        return [(inst.x, wanted)]

    rules = Registry("layout rule")
    for cls in li.RULES:
        if cls is not I.PrintTensorInst:
            rules.add(cls, li.RULES.get(cls))
    monkeypatch.setattr(li, "RULES", rules)
    assert li.layout_rule(I.PrintTensorInst)(print_wants) is print_wants
    b = ProgramBuilder("custom")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [64])
    b.warps = 1
    x = b.load_global(ga, [0], [64], name="x")
    b.print_tensor(b.unary("neg", x, name="y"))
    p = infer_layouts(b.finish())
    assert {t.layout for t in register_tensors(p).values()} == {wanted}
    with pytest.raises(RegistryError, match="two layout rules for PrintTensorInst"):
        li.layout_rule(I.PrintTensorInst)(print_wants)


# ----- the order of defaults and suggestions ----------------------------------------------------

def test_reduction_result_follows_its_input_not_a_bigger_view():
    # the view's output is the largest tensor, but the reduction it reads is fixed by its input
    b = ProgramBuilder("order")
    b.warps = 2
    s = b.shared_tensor(D.float16, [4, 16], name="s")
    x = b.load_shared(s, name="x")
    t = b.binary("lt", x, 0.5, name="t")
    red = b.reduce("min", t, 0, keepdim=True, name="red")
    b.print_tensor(b.view(red, D.uint1, [1, 128], name="v"))
    p = infer_layouts(b.finish())
    ts = register_tensors(p)
    assert ts["red"].layout == ts["t"].layout.reduce(0)


def test_broadcast_operand_suggests_the_layout_of_a_new_tile():
    # y = z - max(t): z has no layout of its own; the row maximum suggests one (rows held by the
    # threads holding the maximum), where z's own default would conflict with it
    b = ProgramBuilder("rows")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [64, 256])
    b.warps = 4
    t = b.load_global(ga, [0, 0], [16, 128], name="t")
    m = b.reduce("max", t, 1, keepdim=True, name="m")
    z = b.load_global(ga, [0, 0], [16, 64], name="z")
    y = b.binary("sub", z, m, name="y")
    b.store_global(ga, y, [0, 0])
    p = infer_layouts(b.finish())
    ts = register_tensors(p)
    assert ts["m"].layout == ts["t"].layout.reduce(1)
    assert ts["z"].layout == ts["y"].layout == local(1, 64) * ts["m"].layout
    assert broadcast_operand_layout(ts["y"].layout, [16, 1]) == ts["m"].layout


def test_annotated_reduction_result_suggests_its_input():
    b = ProgramBuilder("red")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [64, 64])
    b.warps = 1
    x = b.load_global(ga, [0, 0], [32, 8], name="x")
    s = b.reduce("sum", x, 1, name="s")
    b.print_tensor(b.unary("neg", s, name="n"))
    b.print_tensor(x)
    annotated = spatial(32)
    p = infer_layouts(b.finish())     # no annotation: x's default, s follows
    assert register_tensors(p)["s"].layout == register_tensors(p)["x"].layout.reduce(1, keepdim=False)
    prog = b.finish()
    from tilus.lang.script import _ApplyLayouts
    p = infer_layouts(_ApplyLayouts({"s": annotated})(prog))
    assert register_tensors(p)["x"].layout == spatial(32, 1) * local(1, 8)


def test_dot_whose_operand_meets_its_result_elementwise_takes_a_fitting_candidate():
    # t = (C < 0) selects from A: C and A must share a layout, which the preferred 1 x 2 warp
    # grid does not give; one warp's tiling (replicated over the 4 warps) does: with wn = 1 the
    # C tiles of two n8 instructions hold what the A fragment holds, slot for slot
    b = ProgramBuilder("meet")
    b.warps = 4
    ra = b.register_tensor(D.float16, [16, 16], init=1.0, name="ra")
    rb = b.register_tensor(D.float16, [16, 16], init=1.0, name="rb")
    acc = b.register_tensor(D.float32, [16, 16], init=0.0, name="acc")
    b.dot(ra, rb, acc, out=acc)
    t = b.binary("lt", acc, 0.0, name="t")
    b.print_tensor(b.where(t, ra, 0.0, name="w"))
    p = infer_layouts(b.finish())
    ts = register_tensors(p)
    assert ts["acc"].layout == ts["ra"].layout
    dot = only(p, I.DotInst)
    assert dot.c.layout == replicate(4) * local(1, 2) * mma_m16n8k16_f16_c()
    assert dot.a.layout == replicate(4) * mma_m16n8k16_f16_a()
    assert mma_dot_layouts(16, 16, 16, D.float16, D.float32, 128)[0][2] != dot.c.layout


def test_a_tile_added_to_its_own_transpose_infers_and_simulates():
    """Transpose only suggests a layout: the backend converts, so this is no conflict."""
    b = ProgramBuilder("k")
    n = b.param("n", D.int32)
    p = b.param("p", ~D.float32)
    g = b.global_view(p, D.float32, [n, n])
    x = b.load_global(g, [0, 0], [8, 8])
    b.store_global(g, b.binary("add", b.transpose(x), x), [0, 0])
    b.warps = 1
    program = b.finish()
    inferred = infer_layouts(program)
    assert parse(str(inferred)) == inferred
    data = np.arange(64, dtype=np.float32).reshape(8, 8)
    expected = data + data.T
    got = data.copy()
    tilus.simulate(program, 8, got)
    np.testing.assert_array_equal(got, expected)
