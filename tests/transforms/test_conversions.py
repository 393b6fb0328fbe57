"""convert_layout: its cost class against a brute-force oracle over ``index``/``owners``, the text
form (the cost is a comment the parser skips), the interpreter (identity), InsertConversions
(a conversion exactly where an instruction reads a tile in another layout: a transpose into an
annotated layout, a redistributing view, a reduction over warps), the planner (the scratch lives
for the conversion only) and the barriers (a conversion in a loop races with itself)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes as D
from tilus.errors import IRError, TilusError
from tilus.ir import inst as I
from tilus.ir import parse
from tilus.ir.builder import ProgramBuilder
from tilus.ir.functor import instructions
from tilus.ir.layout import column_local, local, replicate, spatial
from tilus.ir.layout.conversion import conversion_cost, reduce_cost
from tilus.transforms import (InsertBarriers, PassManager, default_passes, infer_layouts,
                              insert_conversions, plan_shared_memory, shared_accesses,
                              shared_memory_hazards)
from tilus.transforms.barriers import BARRIER, READ, WRITE
from tilus.transforms.shared_memory import live_ranges
from tests.transforms.test_layout_inference import example_kernels
from tests.transforms.traces import random_trace, races


def oracle_cost(src, dst) -> str:
    """free: each thread finds each of its elements in its own slots, at a slot that is the same
    for every thread; shuffle: at a slot the same for every thread, in some lane of its warp;
    else shared (from ``index`` and ``owners`` only)."""
    threads = dst.num_threads
    free = shuffle = True
    for s in range(dst.local_size):
        own_slots, warp_slots = set(), set()
        for t in range(threads):
            owners = src.owners(dst.index(t, s))
            mine = {slot for thread, slot in owners if thread == t}
            in_warp = {slot for thread, slot in owners if thread // 32 == t // 32}
            own_slots.add(min(mine) if mine else None)
            warp_slots.add(frozenset(in_warp))
        free &= len(own_slots) == 1 and None not in own_slots
        common = frozenset.intersection(*warp_slots)
        shuffle &= bool(common) and threads % 32 == 0
    return "free" if free else "shuffle" if shuffle else "shared"


CASES = [
    (spatial(8, 4) * local(2, 2), spatial(8, 4) * local(2, 2), "free"),
    (spatial(8, 4) * local(2, 2), spatial(8, 4) * column_local(2, 2), "free"),
    (replicate(2) * spatial(4, 4), spatial(4, 4) * replicate(2), "shuffle"),
    ((replicate(2) * local(1, 2) * spatial(8, 4)).permute([1, 0]),
     replicate(2) * local(2, 1) * spatial(4, 8), "shuffle"),
    (spatial(8, 4) * local(1, 2), spatial(4, 8) * local(2, 1), "shared"),
    (spatial(32, 1) * local(1, 4), local(32, 1) * spatial(1, 4) * replicate(8), "shared"),
    (spatial(64, 1) * local(1, 2), local(2, 1) * spatial(32, 2), "shared"),
]


@pytest.mark.parametrize("src,dst,want", CASES)
def test_conversion_cost_matches_the_oracle(src, dst, want):
    assert oracle_cost(src, dst) == want
    assert conversion_cost(src, dst) == want


def _dsl_kernel(layout_x, layout_y, shape=(32, 4), warps=1):
    class K(tilus.Script):
        def __call__(self, p: ~tilus.float32, q: ~tilus.float32):
            self.attrs.blocks = 1
            self.attrs.warps = warps
            g = self.global_view(p, dtype=tilus.float32, shape=list(shape))
            h = self.global_view(q, dtype=tilus.float32, shape=list(shape))
            x = self.load_global(g, offsets=[0, 0], shape=list(shape))
            self.annotate_layout(x, layout_x)
            y = self.convert_layout(x, layout_y)
            self.store_global(h, y * 2.0, offsets=[0, 0])
    return K()


def test_text_form_shows_the_cost_and_parses_back():
    program = _dsl_kernel(spatial(32, 1) * local(1, 4),
                          local(32, 1) * spatial(1, 4) * replicate(8)).program()
    line = next(x for x in str(program).splitlines() if "convert_layout" in x)
    assert line.endswith("= convert_layout(%x)  # cost: shared")
    assert parse(str(program)) == program and str(parse(str(program))) == str(program)


def test_interpreter_treats_it_as_the_identity():
    kernel = _dsl_kernel(spatial(32, 1) * local(1, 4), local(32, 1) * spatial(1, 4) * replicate(8))
    p, q = torch.randn(32, 4), torch.zeros(32, 4)
    tilus.interpret(kernel, p, q)
    assert torch.equal(q, p * 2.0)


def test_the_dsl_and_the_verifier_reject_a_layout_of_another_tile():
    with pytest.raises(TilusError, match="shape"):
        _dsl_kernel(spatial(32, 1) * local(1, 4), spatial(32, 1) * local(1, 2)).program()
    b = ProgramBuilder("k")
    b.warps = 1
    x = b.register_tensor(D.float32, [32, 4], init=0, layout=spatial(32, 1) * local(1, 4))
    bad = b.shared_tensor(D.float16, [32, 4])
    y = b._out("y", D.float32, [32, 4], "register", local(32, 4) * replicate(32))
    with pytest.raises(IRError, match="the scratch %s must have %r's dtype and shape"):
        I.ConvertLayoutInst(y, x, bad).check()


def conversions(program) -> list[I.ConvertLayoutInst]:
    return [i for i in instructions(program) if isinstance(i, I.ConvertLayoutInst)]


def test_a_transpose_into_an_annotated_layout_gets_a_shuffle_after_it():
    b = ProgramBuilder("k")
    b.warps = 2
    x = b.register_tensor(D.float16, [8, 8], init=1.0,
                          layout=replicate(2) * local(1, 2) * spatial(8, 4))
    t = b.transpose(x)
    u = b.binary("add", t, b.register_tensor(D.float16, [8, 8], init=0.0,
                                             layout=replicate(2) * local(2, 1) * spatial(4, 8)))
    out = insert_conversions(infer_layouts(b.finish()))
    (conv,) = conversions(out)
    assert conv.cost == "shuffle" and conv.output.name == t.name
    transpose = next(i for i in instructions(out) if isinstance(i, I.TransposeInst))
    assert transpose.output.layout == x.layout.permute([1, 0]) == conv.x.layout
    assert u.name in str(out)
    assert insert_conversions(out) == out          # nothing left to convert


def test_a_redistributing_view_gets_one_conversion_through_a_scratch_of_its_own():
    program = PassManager(default_passes()).run(example_kernels()["matmul_lowbit_uint3"].program())
    (conv,) = conversions(program)
    assert conv.cost == "shared" and conv.scratch is not None
    assert conv.scratch.dtype is D.uint3 and conv.scratch.shape == conv.x.shape   # bit-packed
    body = [line.strip() for line in str(program).splitlines()]
    at = next(i for i, line in enumerate(body) if "convert_layout" in line)
    assert body[at - 1].startswith(f"%{conv.scratch.name}: shared[uint3")
    assert body[at + 1] == f"free_shared(%{conv.scratch.name})"
    view = next(i for i in instructions(program) if isinstance(i, I.ViewInst))
    assert view.output.name == conv.x.name


def test_a_reduction_over_warps_splits_its_rows_over_the_lanes_of_a_warp():
    b = ProgramBuilder("k")
    b.warps = 4
    x = b.register_tensor(D.float32, [4, 128], init=1.0, layout=local(4, 1) * spatial(1, 128))
    r = b.reduce("sum", x, 1)
    program = insert_conversions(infer_layouts(b.finish()))
    before, after = conversions(program)
    reduce = next(i for i in instructions(program) if isinstance(i, I.ReduceInst))
    assert before.x.name == x.name and reduce.x.name == before.output.name
    assert reduce_cost(reduce.x.layout, reduce.output.layout, 1, False, D.float32) == "shuffle"
    assert reduce.x.layout.local_size == 128 // 32          # a row over the 32 lanes of one warp
    assert after.x.name == reduce.output.name and after.output.name == r.name
    assert after.output.layout == local(4) * replicate(128)  # what layout inference gave r
    assert infer_layouts(program) == program       # the conversions are consistent with the rules


def test_a_bool_reduction_over_warps_reads_rows_held_whole():
    b = ProgramBuilder("k")
    b.warps = 4
    x = b.register_tensor(D.bool, [4, 128], init=True, layout=local(4, 1) * spatial(1, 128))
    r = b.reduce("max", x, 1)
    program = insert_conversions(infer_layouts(b.finish()))
    (conv,) = conversions(program)              # no butterfly for bool: whole rows
    assert conv.cost == "shared"
    reduce = next(i for i in instructions(program) if isinstance(i, I.ReduceInst))
    assert reduce.x.name == conv.output.name and reduce.output.name == r.name
    assert reduce.x.layout.reduce(1, keepdim=False) == reduce.output.layout
    assert infer_layouts(program) == program


def test_the_scratch_lives_for_its_conversion_only():
    def kernel():
        b = ProgramBuilder("k")
        b.warps = 1
        x = b.register_tensor(D.float32, [32, 4], init=1.0, layout=spatial(32, 1) * local(1, 4))
        y = b.convert_layout(x, local(32, 1) * spatial(1, 4) * replicate(8))
        b.convert_layout(y, spatial(32, 1) * local(1, 4))
        return b.finish()
    planned = plan_shared_memory(insert_conversions(infer_layouts(kernel())))
    allocs = [i for i in instructions(planned) if isinstance(i, I.AllocateSharedInst)]
    assert len(allocs) == 2 and {a.offset for a in allocs} == {0}      # disjoint lifetimes
    ranges = live_ranges(planned)
    points = [i for i in instructions(planned)]
    for a in allocs:
        user = next(p for p, i in enumerate(points) if isinstance(i, I.ConvertLayoutInst)
                    and i.scratch is not None and i.scratch.name == a.output.name)
        assert ranges[a.output.name].end == user + 1         # the free right after it


def test_a_conversion_in_a_loop_races_with_itself_and_gets_one_barrier():
    b = ProgramBuilder("k")
    b.warps = 1
    x = b.register_tensor(D.float32, [32, 4], init=1.0, layout=spatial(32, 1) * local(1, 4))
    with b.for_range(0, 4):
        b.convert_layout(x, local(32, 1) * spatial(1, 4) * replicate(8))
    program = plan_shared_memory(insert_conversions(infer_layouts(b.finish())))
    (conv,) = conversions(program)
    assert [(a.kind) for a in shared_accesses(conv)] == [WRITE, BARRIER, READ]
    assert [(a, b_) for a, b_ in shared_memory_hazards(program)] == [(conv, conv)]
    p = InsertBarriers()
    out = p.run(program)
    assert p.inserted == 1 and shared_memory_hazards(out) == []
    lines = [line.strip() for line in str(out).splitlines()]
    assert lines[lines.index(f"free_shared(%{conv.scratch.name})") + 1] == "sync()"  # loop end
    rng = random.Random(0)
    found = set()
    for _ in range(20):
        assert races(out, random_trace(out, rng)) == []
        found.update(map(tuple, races(program, random_trace(program, rng))))
    assert found == {(conv, conv)}           # the traces oracle sees the race the pass fixed


@pytest.mark.parametrize("name", ["matmul_lowbit_uint3", "softmax"])
def test_results_after_the_pipeline_equal_the_interpreter(name):
    from tests.transforms.test_barriers import _example_args

    kernel_ = example_kernels()[name]
    program, _ = kernel_.instantiate(*_example_args(name))
    results = []
    for prog in (program, PassManager(default_passes()).run(program)):
        args = _example_args(name)
        _, rt = kernel_.instantiate(*args)
        tilus.interpret(prog, *rt)
        results.append([a for a in args if isinstance(a, torch.Tensor)])
    for x, y in zip(*results):
        assert torch.equal(x, y)
    assert np.isfinite(results[0][-1].float().numpy()).all()
