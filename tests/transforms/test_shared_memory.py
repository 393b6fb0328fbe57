"""Shared-memory planning: offsets are aligned, tensors live at the same time never share bytes
(checked on every pair, on random programs and the examples, against random execution traces),
tensors with disjoint lifetimes do, loops keep tensors alive, sizes follow layouts and sub-byte
packing, too much shared memory is an error naming the tensors, and the offset attribute prints
and parses back."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings

from tilus import dtypes as D
from tilus.errors import CompilationError, IRError, LayoutInferenceError
from tilus.ir import inst as I
from tilus.ir import parse, verify
from tilus.ir.builder import ProgramBuilder
from tilus.ir.functor import instructions
from tilus.ir.layout import row_major, swizzle_128b
from tilus.transforms import (LayoutInference, PassManager, PlanSharedMemory, default_passes,
                              infer_layouts, max_shared_memory_bytes, needs_shared_memory_opt_in,
                              plan_shared_memory, shared_memory_bytes)
from tilus.transforms.shared_memory import live_ranges, shared_tensor_nbytes
from tests.ir.strategies import programs
from tests.transforms.test_layout_inference import example_kernels
from tests.transforms.traces import lifetime_clashes, random_trace


def allocations(program) -> dict[str, I.AllocateSharedInst]:
    return {i.output.name: i for i in instructions(program) if isinstance(i, I.AllocateSharedInst)}


def check_plan(program, alignment: int = 128) -> None:
    """Every offset is aligned; every pair of tensors whose live ranges overlap is disjoint in
    bytes; the total is max(offset + size); random traces find no clash."""
    allocs = allocations(program)
    ranges = live_ranges(program)
    for name, a in allocs.items():
        assert a.offset is not None and a.offset % alignment == 0, (name, a.offset)
    names = sorted(allocs)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            if ranges[x].overlaps_in_time(ranges[y]):
                ax, ay = allocs[x], allocs[y]
                assert ax.offset + shared_tensor_nbytes(ax.output) <= ay.offset or \
                    ay.offset + shared_tensor_nbytes(ay.output) <= ax.offset, (x, y)
    assert shared_memory_bytes(program) == max(
        (a.offset + shared_tensor_nbytes(a.output) for a in allocs.values()), default=0)
    rng = random.Random(0)
    for _ in range(30):
        assert lifetime_clashes(program, random_trace(program, rng)) == []


def kernel(name="k", warps=4):
    b = ProgramBuilder(name)
    b.warps = warps
    return b


# ----- the offset attribute ---------------------------------------------------------------------

def test_offset_attribute_prints_and_parses_back():
    b = kernel()
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    b.store_shared(s, b.register_tensor(D.float16, [16, 16], init=1.0))
    program = b.finish()
    planned = plan_shared_memory(program)
    text = str(planned)
    assert "shared_tensor(offset=0)" in text
    assert parse(text) == planned
    assert parse(str(program)) == program and "shared_tensor()" in str(program)
    with pytest.raises(IRError, match="offset must be a non-negative byte offset"):
        parse(text.replace("offset=0", "offset=-128"))


# ----- the examples -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["matmul_fp16", "matmul_splitk", "matmul_lowbit", "softmax"])
def test_examples_are_planned(name):
    program = infer_layouts(example_kernels()[name].program())
    planned = plan_shared_memory(program)
    verify(planned)
    check_plan(planned)
    assert parse(str(planned)) == planned
    assert plan_shared_memory(planned) == planned  # idempotent
    allocs = allocations(planned)
    if name == "matmul_fp16":
        # sa [32, 16] and sb [16, 32] fp16 are live together: 1024 bytes each, side by side
        assert {n: a.offset for n, a in allocs.items()} == {"sa": 0, "sb": 1024}
        assert shared_memory_bytes(planned) == 2048
    elif not allocs:
        assert shared_memory_bytes(planned) == 0 and planned == program


def test_default_pipeline_on_the_examples():
    for name, k in example_kernels().items():
        manager = PassManager(default_passes())
        out = manager.run(k.program())
        assert [p.name for p in manager.passes] == [LayoutInference.name, "insert_conversions",
                                                    PlanSharedMemory.name, "insert-barriers"]
        assert parse(str(out)) == out, name
        assert shared_memory_bytes(out) <= 48 * 1024 and not needs_shared_memory_opt_in(out)


# ----- random programs --------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(programs())
def test_random_programs_never_share_bytes_while_live(program):
    planned = plan_shared_memory(program)        # without layouts: row-major sizes
    verify(planned)
    check_plan(planned)
    assert parse(str(planned)) == planned
    try:
        inferred = infer_layouts(program)
    except LayoutInferenceError:
        return
    planned = plan_shared_memory(inferred, alignment=16)
    check_plan(planned, alignment=16)


# ----- liveness ---------------------------------------------------------------------------------

def _use(b, s):
    x = b.register_tensor(s.dtype, s.shape, init=0)
    b.store_shared(s, x)
    b.sync()
    return b.load_shared(s)


def test_disjoint_lifetimes_share_bytes():
    b = kernel()
    s1 = b.shared_tensor(D.float16, [64, 64], name="s1")     # 8 KB
    _use(b, s1)
    b.free_shared(s1)
    s2 = b.shared_tensor(D.float32, [32, 32], name="s2")     # 4 KB
    _use(b, s2)
    s3 = b.shared_tensor(D.int8, [16, 16], name="s3")        # 256 B, live with s2
    _use(b, s3)
    b.load_shared(s2)
    program = b.finish()
    planned = plan_shared_memory(program)
    check_plan(planned)
    offsets = {n: a.offset for n, a in allocations(planned).items()}
    assert offsets["s1"] == 0 and offsets["s2"] == 0 and offsets["s3"] == 4096
    total = shared_memory_bytes(planned)
    assert total == 8192 < 8192 + 4096 + 256


def test_last_use_ends_a_lifetime_without_free():
    b = kernel()
    s1 = b.shared_tensor(D.float16, [32, 32], name="s1")
    _use(b, s1)
    s2 = b.shared_tensor(D.float16, [32, 32], name="s2")
    _use(b, s2)
    planned = plan_shared_memory(b.finish())
    assert {a.offset for a in allocations(planned).values()} == {0}


def test_a_tensor_used_in_a_loop_is_live_for_the_whole_loop():
    b = kernel()
    outer = b.shared_tensor(D.float16, [32, 32], name="outer")
    with b.for_range(0, 4):
        _use(b, outer)           # last use in program order is here ...
        inner = b.shared_tensor(D.float16, [32, 32], name="inner")
        _use(b, inner)           # ... but the next iteration uses outer again
    planned = plan_shared_memory(b.finish())
    check_plan(planned)
    offsets = {n: a.offset for n, a in allocations(planned).items()}
    assert offsets["outer"] != offsets["inner"]


def test_tensors_allocated_inside_a_loop_can_share():
    b = kernel()
    with b.for_range(0, 4):
        t1 = b.shared_tensor(D.float16, [32, 32], name="t1")
        _use(b, t1)
        t2 = b.shared_tensor(D.float16, [32, 32], name="t2")
        _use(b, t2)
    planned = plan_shared_memory(b.finish())
    check_plan(planned)
    assert shared_memory_bytes(planned) == 2048


def test_slices_keep_their_source_alive():
    b = kernel()
    s = b.shared_tensor(D.float16, [2, 16, 16], name="s")
    part = b.slice_shared(s, [1, 0, 0], [16, 16], dims=[1, 2], name="part")
    other = b.shared_tensor(D.float16, [16, 16], name="other")
    _use(b, other)
    _use(b, part)
    planned = plan_shared_memory(b.finish())
    check_plan(planned)
    offsets = {n: a.offset for n, a in allocations(planned).items()}
    assert offsets["s"] != offsets["other"]


def test_a_copy_in_flight_keeps_its_destination_alive_until_the_wait():
    b = kernel()
    p = b.param("p", ~D.float16)
    g = b.global_view(p, D.float16, [64, 64])
    s1 = b.shared_tensor(D.float16, [32, 32], name="s1")
    b.copy_async(g, s1, [0, 0])                 # s1 is never read, but the copy lands later
    b.copy_async_commit_group()
    s2 = b.shared_tensor(D.float16, [32, 32], name="s2")
    _use(b, s2)
    b.copy_async_wait_group(0)
    planned = plan_shared_memory(b.finish())
    offsets = {n: a.offset for n, a in allocations(planned).items()}
    assert offsets["s1"] != offsets["s2"]


# ----- sizes and alignment ----------------------------------------------------------------------

def test_sizes_follow_layouts_and_pack_sub_byte_types():
    b = kernel()
    sizes, tensors = {}, []
    for name, dtype, shape, layout in [
            ("h", D.float16, [32, 64], swizzle_128b(row_major(32, 64), D.float16)),
            ("padded", D.float16, [16, 16], row_major(16, 16, pad=8)),
            ("q4", D.uint4, [16, 8], None),
            ("q3", D.uint3, [3, 5], None),
            ("b1", D.uint1, [1, 1], None)]:
        s = b.shared_tensor(dtype, shape, name=name, layout=layout)
        b.store_shared(s, b.register_tensor(dtype, shape, init=0))
        sizes[name] = shared_tensor_nbytes(s)
        tensors.append(s)
    for s in tensors:            # all live together
        b.load_shared(s)
    assert sizes == {"h": 4096, "padded": (15 * 24 + 16) * 2, "q4": 64, "q3": 6, "b1": 1}
    planned = plan_shared_memory(b.finish())
    check_plan(planned)
    assert sorted(a.offset for a in allocations(planned).values()) == [0, 4096, 4096 + 768,
                                                                        4096 + 896, 4096 + 1024]


def test_alignment_is_a_power_of_two_of_at_least_16():
    b = kernel()
    tensors = []
    for n in range(3):
        s = b.shared_tensor(D.int8, [1, 20 + n], name=f"s{n}")
        b.store_shared(s, b.register_tensor(D.int8, [1, 20 + n], init=0))
        tensors.append(s)
    for s in tensors:
        b.load_shared(s)
    program = b.finish()
    planned = plan_shared_memory(program, alignment=16)
    check_plan(planned, alignment=16)
    assert shared_memory_bytes(planned) == 32 + 32 + 20   # largest (22 bytes) first
    for bad in (8, 100, 0):
        with pytest.raises(CompilationError, match="power of two"):
            PlanSharedMemory(alignment=bad)


# ----- limits -----------------------------------------------------------------------------------

def _big(kbytes: list[int]):
    b = kernel("big")
    tensors = [b.shared_tensor(D.float32, [k * 256], name=f"buf{i}") for i, k in enumerate(kbytes)]
    for t in tensors:
        b.store_shared(t, b.register_tensor(D.float32, t.shape, init=0))
    b.sync()
    for t in tensors:
        b.load_shared(t)
    return b.finish()


def test_more_than_48_kb_needs_the_opt_in():
    planned = plan_shared_memory(_big([40, 20]))
    assert shared_memory_bytes(planned) == 60 * 1024
    assert needs_shared_memory_opt_in(planned)
    p = PlanSharedMemory()
    p.run(_big([40, 20]))
    assert p.total_bytes == 60 * 1024 and p.plan.needs_opt_in
    assert not needs_shared_memory_opt_in(plan_shared_memory(_big([40, 8])))


def test_more_than_the_arch_allows_is_an_error_naming_the_tensors():
    assert max_shared_memory_bytes("sm_90") == 227 * 1024
    assert max_shared_memory_bytes("sm_80") == 163 * 1024
    assert max_shared_memory_bytes("sm_90a") == 227 * 1024
    program = _big([128, 120])
    with pytest.raises(CompilationError) as e:
        plan_shared_memory(program, arch="sm_90")
    msg = str(e.value)
    assert "253952 bytes" in msg and "232448 bytes (227 KB)" in msg and "sm_90" in msg
    assert "%buf0 (float32[32768]: 131072 bytes at offset 0)" in msg
    assert "%buf1 (float32[30720]: 122880 bytes at offset 131072)" in msg
    program = _big([100, 70])               # 170 KB: fine on sm_90, too much on sm_80
    assert shared_memory_bytes(plan_shared_memory(program, arch="sm_90")) == 170 * 1024
    with pytest.raises(CompilationError,
                       match=r"166912 bytes \(163 KB\) one block may use on sm_80"):
        plan_shared_memory(program, arch="sm_80")
    with pytest.raises(CompilationError, match="unknown architecture"):
        PlanSharedMemory(arch="volta")


def test_shared_memory_bytes_needs_a_planned_program():
    b = kernel()
    s = b.shared_tensor(D.float16, [8, 8], name="s")
    b.store_shared(s, b.register_tensor(D.float16, [8, 8], init=0))
    with pytest.raises(CompilationError, match="run PlanSharedMemory first"):
        shared_memory_bytes(b.finish())
    with pytest.raises(CompilationError, match="has not run yet"):
        PlanSharedMemory().total_bytes
