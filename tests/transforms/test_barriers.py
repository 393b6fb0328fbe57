"""Barrier insertion: the examples with their sync() removed get them back where they were, no
shared memory means no barrier, a double-buffered copy_async loop gets its WAR barrier, existing
barriers are respected and never duplicated, bytes reused by the plan count as aliasing, reading a
copy still in flight is an error naming both instructions; random programs stripped of their
barriers end up race-free (random traces) with no barrier that could be dropped; results and the
text form are unchanged."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings

import tilus
from tilus import dtypes as D
from tilus.errors import CompilationError, LayoutInferenceError
from tilus.ir import inst as I
from tilus.ir import parse, verify
from tilus.ir.builder import ProgramBuilder
from tilus.ir.functor import IRRewriter, instructions
from tilus.ir.stmt import SeqStmt
from tilus.transforms import (InsertBarriers, PassManager, default_passes, infer_layouts,
                              insert_barriers, plan_shared_memory, shared_accesses,
                              shared_memory_hazards)
from tilus.transforms.barriers import READ, WRITE, _Numbered, _hazards
from tests.ir.strategies import programs
from tests.transforms.test_layout_inference import example_kernels
from tests.transforms.traces import random_trace, races


class StripSyncs(IRRewriter):
    """Every sync -> an empty statement (not None: a sync can be a branch's whole body)."""

    def visit_SyncInst(self, s):
        return SeqStmt(())


class WaitForAll(IRRewriter):
    """copy_async_wait_group(n) -> (0): the random programs wait for fewer groups than they read."""

    def visit_CopyAsyncWaitGroupInst(self, s):
        return replace(s, n=0)


def syncs(program) -> int:
    return sum(isinstance(i, I.SyncInst) for i in instructions(program))


def lines(program) -> list[str]:
    return [line.strip() for line in str(program).splitlines()]


def barriers(program):
    p = InsertBarriers()
    out = p.run(program)
    assert syncs(out) == syncs(program) + p.inserted
    return out, p.inserted


def check_race_free(program, traces: int = 40) -> None:
    assert shared_memory_hazards(program) == []
    rng = random.Random(1)
    for _ in range(traces):
        assert races(program, random_trace(program, rng)) == []


def check_every_inserted_barrier_is_needed(before, after) -> None:
    """Dropping any one sync of ``after`` that ``before`` lacked leaves a hazard."""
    kept = syncs(before)
    assert syncs(after) >= kept
    if kept:
        return  # which syncs are new is ambiguous; the random tests strip them all first
    body_syncs = [i for i in instructions(after) if isinstance(i, I.SyncInst)]
    for victim in body_syncs:
        class Drop(IRRewriter):
            def visit_SyncInst(self, s):
                return None if s is victim else s
        assert shared_memory_hazards(Drop()(after)), "a redundant barrier was inserted"


def kernel(name="k", warps=4):
    b = ProgramBuilder(name)
    b.warps = warps
    return b


# ----- what instructions do ---------------------------------------------------------------------

def test_shared_accesses_of_the_instructions():
    b = kernel()
    p = b.param("p", ~D.float16)
    g = b.global_view(p, D.float16, [64, 64])
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    x = b.load_shared(s)
    b.store_shared(s, x)
    b.copy_async(g, s, [0, 0])
    part = b.slice_shared(s, [0, 0], [16], dims=[1])
    b.free_shared(s)
    got = {type(i).__name__: [(a.tensor.name, a.kind) for a in shared_accesses(i)]
           for i in instructions(b.finish())}
    assert got["LoadSharedInst"] == [("s", READ)]
    assert got["StoreSharedInst"] == [("s", WRITE)]
    assert got["CopyAsyncInst"] == [("s", WRITE)]
    assert got["SliceSharedInst"] == got["FreeSharedInst"] == got["AllocateSharedInst"] == []
    assert part.name in str(b.finish())


# ----- the examples -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(example_kernels()))
def test_examples_with_their_syncs_removed_get_them_back(name):
    planned = plan_shared_memory(infer_layouts(example_kernels()[name].program()))
    stripped = StripSyncs()(planned)
    out, inserted = barriers(stripped)
    assert inserted == syncs(planned)
    assert out == planned            # the very places the author put them
    verify(out)
    check_race_free(out)
    check_every_inserted_barrier_is_needed(stripped, out)
    # the examples' own barriers suffice: nothing to add
    again, added = barriers(planned)
    assert added == 0 and again is planned


def test_matmul_fp16_barriers():
    planned = plan_shared_memory(infer_layouts(example_kernels()["matmul_fp16"].program()))
    out, inserted = barriers(StripSyncs()(planned))
    assert inserted == 2
    text = lines(out)
    wait = text.index("copy_async_wait_group(n=0)")
    assert text[wait + 1] == "sync()"                    # RAW: copies visible to every thread
    assert text[wait + 2].endswith("load_shared(%sa)")
    end = text.index("free_shared(%sa)")
    assert text[end - 2:end] == ["sync()", "}"]           # WAR: before the next iteration's copies


def test_no_shared_memory_no_barriers():
    for name in ("matmul_splitk", "vector_add", "softmax"):
        program = plan_shared_memory(infer_layouts(example_kernels()[name].program()))
        assert syncs(program) == 0
        out, inserted = barriers(program)
        assert inserted == 0 and out is program


def _example_args(name):
    from tests.transforms.test_layout_inference import load_example

    g = torch.Generator().manual_seed(0)
    if name == "vector_add":
        return (300, torch.randn(300, generator=g), torch.randn(300, generator=g), torch.zeros(300))
    if name == "softmax":
        return (20, 100, torch.randn(20, 100, generator=g), torch.zeros(20, 100))
    if name == "matmul_fp16":
        return (40, 36, 50, torch.randn(40, 50, generator=g).half(),
                torch.randn(50, 36, generator=g).half(), torch.zeros(40, 36).half())
    if name.startswith("matmul_lowbit"):
        a, w, s, _ = load_example("matmul_lowbit").make_inputs(
            "uint3" if name.endswith("uint3") else "int4", 20, 40, 64, 32)
        return (20, 40, 64, a, w, s, torch.zeros(20, 40).half())
    return (40, 40, 64, torch.randn(40, 64, generator=g).half(),
            torch.randn(64, 40, generator=g).half(), torch.zeros(40, 40),
            torch.zeros(4, dtype=torch.int32))


@pytest.mark.parametrize("name", list(example_kernels()))
def test_interpreter_gives_the_same_results_after_the_default_pipeline(name):
    kernel_ = example_kernels()[name]
    program, _ = kernel_.instantiate(*_example_args(name))
    transformed = PassManager(default_passes()).run(StripSyncs()(program))
    # the user's barriers come back (and those of conversions through shared memory are added)
    assert syncs(transformed) == syncs(PassManager(default_passes()).run(program))
    results = []
    for prog in (program, transformed):
        args = _example_args(name)
        _, rt = kernel_.instantiate(*args)
        tilus.interpret(prog, *rt)
        results.append([a for a in args if isinstance(a, torch.Tensor)])
    for x, y in zip(*results):
        assert torch.equal(x, y)


def test_default_pipeline_keeps_results():
    kernel_ = example_kernels()["matmul_fp16"]

    def make_args():
        g = torch.Generator().manual_seed(0)
        return (40, 36, 50, torch.randn(40, 50, generator=g).half(),
                torch.randn(50, 36, generator=g).half(), torch.zeros(40, 36).half())

    program, _ = kernel_.instantiate(*make_args())
    transformed = PassManager(default_passes()).run(StripSyncs()(program))
    assert syncs(transformed) == 2
    assert parse(str(transformed)) == transformed
    results = []
    for prog in (program, transformed):
        args = make_args()
        _, rt = kernel_.instantiate(*args)
        tilus.interpret(prog, *rt)
        results.append(args[-1])
    assert torch.equal(results[0], results[1]) and results[1].abs().sum() > 0


# ----- hand-written programs --------------------------------------------------------------------

def double_buffered(k_tiles: int = 5):
    """A copy_async pipeline over the two stages of one shared buffer: the copy of tile k+1 is
    in flight while tile k is read (wait_group(1))."""
    b = kernel("pipeline")
    pa = b.param("a", ~D.float32)
    pc = b.param("c", ~D.float32)
    ga = b.global_view(pa, D.float32, [16 * k_tiles, 16], name="ga")
    gc = b.global_view(pc, D.float32, [16, 16], name="gc")
    s = b.shared_tensor(D.float32, [2, 16, 16], name="s")
    acc = b.register_tensor(D.float32, [16, 16], init=0.0, name="acc")
    first = b.slice_shared(s, [0, 0, 0], [16, 16], dims=[1, 2], name="first")
    b.copy_async(ga, first, [0, 0])
    b.copy_async_commit_group()
    with b.for_range(0, k_tiles, name="kt") as kt:
        nxt = b.slice_shared(s, [(kt + 1) % 2, 0, 0], [16, 16], dims=[1, 2], name="nxt")
        with b.if_then(kt + 1 < k_tiles):
            b.copy_async(ga, nxt, [(kt + 1) * 16, 0])
        b.copy_async_commit_group()
        b.copy_async_wait_group(1)
        cur = b.slice_shared(s, [kt % 2, 0, 0], [16, 16], dims=[1, 2], name="cur")
        x = b.load_shared(cur, name="x")
        b.binary("add", acc, x, out=acc)
    b.store_global(gc, acc, [0, 0])
    return b.finish()


def test_double_buffered_copy_async_loop_gets_its_war_barrier():
    program = plan_shared_memory(infer_layouts(double_buffered()))
    out, inserted = barriers(program)
    assert inserted == 2
    text = lines(out)
    read = next(i for i, line in enumerate(text) if line.endswith("load_shared(%cur)"))
    assert text[read - 1] == "sync()"                    # RAW after the wait
    close = next(i for i, line in enumerate(text) if line.startswith("store_global"))
    # WAR: the next iteration's copy goes into the stage this one read
    assert text[close - 2:close] == ["sync()", "}"]
    check_race_free(out)
    check_every_inserted_barrier_is_needed(program, out)
    assert parse(str(out)) == out
    a = torch.arange(5 * 16 * 16, dtype=torch.float32).reshape(80, 16)
    results = []
    for prog in (program, out):
        c = torch.zeros(16, 16)
        tilus.interpret(prog, a, c)
        results.append(c)
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[1], a.reshape(5, 16, 16).sum(0))


def test_existing_barriers_are_respected_and_not_duplicated():
    b = kernel()
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    t = b.shared_tensor(D.float16, [16, 16], name="t")
    x = b.register_tensor(D.float16, [16, 16], init=1.0)
    b.store_shared(s, x)
    b.sync()                     # orders the store to s before the load
    b.load_shared(s)
    b.store_shared(t, x)         # a different tensor: no hazard with s
    b.load_shared(t)             # RAW on t: one barrier
    program = b.finish()
    out, inserted = barriers(program)
    assert inserted == 1
    text = lines(out)
    assert text[text.index("sync()") + 1].endswith("load_shared(%s)")
    i = next(i for i, line in enumerate(text) if line.endswith("load_shared(%t)"))
    assert text[i - 1] == "sync()"
    again, added = barriers(out)
    assert added == 0 and again is out


def test_reads_after_reads_need_no_barrier_and_writes_after_writes_do():
    b = kernel()
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    x = b.register_tensor(D.float16, [16, 16], init=1.0)
    b.store_shared(s, x)
    b.sync()
    b.load_shared(s)
    b.load_shared(s)
    assert barriers(b.finish())[1] == 0
    b = kernel()
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    x = b.register_tensor(D.float16, [16, 16], init=1.0)
    b.store_shared(s, x)
    b.store_shared(s, b.register_tensor(D.float16, [16, 16], init=2.0))   # WAW
    out, inserted = barriers(b.finish())
    assert inserted == 1
    text = lines(out)
    stores = [i for i, line in enumerate(text) if line.startswith("store_shared")]
    assert stores[0] < text.index("sync()") == stores[1] - 1


def test_bytes_reused_by_the_plan_alias():
    b = kernel()
    s1 = b.shared_tensor(D.float16, [16, 16], name="s1")
    b.store_shared(s1, b.register_tensor(D.float16, [16, 16], init=1.0))
    b.sync()
    b.load_shared(s1)
    b.free_shared(s1)
    s2 = b.shared_tensor(D.float16, [16, 16], name="s2")
    b.store_shared(s2, b.register_tensor(D.float16, [16, 16], init=2.0))  # WAR on s1's bytes
    b.sync()
    b.load_shared(s2)
    program = b.finish()
    assert barriers(program)[1] == 0          # unplanned: two different tensors
    planned = plan_shared_memory(program)
    offsets = {i.output.name: i.offset for i in instructions(planned)
               if isinstance(i, I.AllocateSharedInst)}
    assert offsets == {"s1": 0, "s2": 0}
    out, inserted = barriers(planned)
    assert inserted == 1
    text = lines(out)
    i = next(i for i, line in enumerate(text) if line.startswith("store_shared(%s2"))
    assert text[i - 1] == "sync()"
    check_race_free(out)


def test_a_continue_that_skips_the_loop_end_needs_the_barrier_at_the_top():
    b = kernel()
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    with b.for_range(0, 8) as i:
        b.load_shared(s)
        b.store_shared(s, b.register_tensor(D.float16, [16, 16], init=1.0))
        with b.if_then(i > 3):
            b.continue_()
        b.print_tensor(b.register_tensor(D.float16, [2], init=0.0))
    program = b.finish()
    out, inserted = barriers(program)
    assert inserted == 2
    text = lines(out)
    top = text.index(next(line for line in text if line.startswith("for ")))
    assert text[top + 1] == "sync()" and text[top + 2].endswith("load_shared(%s)")
    check_race_free(out)
    check_every_inserted_barrier_is_needed(program, out)


def test_reading_a_copy_in_flight_is_an_error_naming_both():
    for wait in ([], [1]):
        b = kernel()
        p = b.param("p", ~D.float16)
        g = b.global_view(p, D.float16, [64, 64], name="g")
        s = b.shared_tensor(D.float16, [16, 16], name="s")
        b.copy_async(g, s, [0, 0])
        b.copy_async_commit_group()
        for n in wait:
            b.copy_async_wait_group(n)
        b.load_shared(s, name="x")
        with pytest.raises(CompilationError) as e:
            insert_barriers(b.finish())
        msg = str(e.value)
        assert "`%x = load_shared(%s)` reads %s while `copy_async(%s, %g, offsets=[0, 0])` may " \
               "still be copying into it" in msg
        assert "copy_async_wait_group" in msg
    # with the wait the barrier is enough
    b = kernel()
    p = b.param("p", ~D.float16)
    g = b.global_view(p, D.float16, [64, 64], name="g")
    s = b.shared_tensor(D.float16, [16, 16], name="s")
    b.copy_async(g, s, [0, 0])
    b.copy_async_commit_group()
    b.copy_async_wait_group(0)
    b.sync()                    # before the wait would not do: the copy is still in flight
    b.load_shared(s)
    program = b.finish()
    assert barriers(program)[1] == 0
    moved = list(program.body.stmts)
    moved[-3], moved[-2] = moved[-2], moved[-3]   # sync before the wait
    out, inserted = barriers(replace(program, body=replace(program.body, stmts=tuple(moved))))
    assert inserted == 1


# ----- random programs --------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(programs())
def test_random_programs_without_barriers_get_exactly_the_needed_ones(program):
    program = WaitForAll()(StripSyncs()(program))
    try:
        program = infer_layouts(program)
    except LayoutInferenceError:
        pass
    planned = plan_shared_memory(program)
    out, inserted = barriers(planned)
    verify(out)
    check_race_free(out, traces=20)
    check_every_inserted_barrier_is_needed(planned, out)
    assert parse(str(out)) == out
    again, added = barriers(out)
    assert added == 0 and again is out
    if not any(isinstance(i, I.AllocateSharedInst) for i in instructions(program)):
        assert inserted == 0 and out is planned


def test_hazards_of_a_program_as_it_is():
    planned = plan_shared_memory(infer_layouts(example_kernels()["matmul_fp16"].program()))
    stripped = StripSyncs()(planned)
    pairs = [(a.display_name(), b.display_name()) for a, b in shared_memory_hazards(stripped)]
    assert ("copy_async", "load_shared") in pairs and ("load_shared", "copy_async") in pairs
    assert len(pairs) == len(set(map(str, shared_memory_hazards(stripped)))) == 4
    assert _hazards(_Numbered(planned), ()) == []
