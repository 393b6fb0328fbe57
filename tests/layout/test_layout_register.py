import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.layout.layout_strategies import factorizations, layouts
from tilus import dtypes
from tilus.errors import LayoutError
from tilus.ir.expr import Var, evaluate
from tilus.ir.layout import (RegisterLayout, column_local, column_spatial, concat, local,
                             parse_layout, register_layout, replicate, spatial)

C = local(2, 1) * spatial(8, 4) * local(1, 2)
t_var, s_var = Var("t", dtypes.int32), Var("s", dtypes.int32)


def all_cells(layout):
    return itertools.product(range(layout.num_threads), range(layout.local_size))


def test_primitives():
    assert [local(2, 3).index(0, s) for s in range(6)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [spatial(2, 3).index(t, 0) for t in range(6)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [column_local(2, 3).index(0, s) for s in range(6)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert [column_spatial(2, 3).index(t, 0) for t in range(6)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert (local(2, 3).num_threads, local(2, 3).local_size) == (1, 6)
    assert (spatial(2, 3).num_threads, spatial(2, 3).local_size) == (6, 1)


def test_design_example_c_fragment():
    assert C.shape == (16, 8) and C.num_threads == 32 and C.local_size == 4
    assert C.index(5, 3) == (9, 3)          # lane 5: groupID 1, threadID_in_group 1, c3
    assert C.owners((9, 3)) == [(5, 3)]
    assert str(C) == "local(2,1)*spatial(8,4)*local(1,2)"


def test_replication():
    r = spatial(8, 1) * replicate(4)
    assert r.shape == (8, 1) and r.num_threads == 32 and r.local_size == 1
    assert r.owners((3, 0)) == [(12, 0), (13, 0), (14, 0), (15, 0)]
    assert r.index(14, 0) == (3, 0)
    assert replicate(2) * replicate(3) == replicate(6)
    assert str(replicate(4) * spatial(8)) == "replicate(4)*spatial(8)"


def test_equality_by_meaning():
    assert local(2, 1) * local(1, 2) == local(2, 2)
    assert spatial(2, 1) * spatial(1, 4) == spatial(2, 4)
    assert spatial(1, 4) * spatial(2, 1) == column_spatial(2, 4) != spatial(2, 4)
    assert local(1, 2) * local(2, 1) == column_local(2, 2)
    assert local(4) == local(2) * local(2) and hash(local(4)) == hash(local(2) * local(2))
    assert local(1, 1) == spatial(1, 1) == column_local(1, 1)
    assert local(2) != spatial(2)
    assert RegisterLayout((16, 8), (2, 8, 4, 2), (1, 2), (0, 3)) == C
    assert RegisterLayout((4,), (2, 1, 2), (0,), (2,)) == spatial(2) * local(2)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_equal_iff_same_table(data):
    rank = data.draw(st.integers(1, 2))
    a = data.draw(layouts(rank=rank))
    b = data.draw(layouts(rank=rank))
    same = (a.shape == b.shape and a.num_threads == b.num_threads and a.local_size == b.local_size
            and np.array_equal(a.index_table(), b.index_table()))
    assert (a == b) == same
    if same:
        assert hash(a) == hash(b) and str(a) == str(b)
    # rebuilding from the mode form, or from a split of every mode, gives the same layout
    assert RegisterLayout(a.shape, a.mode_shape, a.spatial_modes, a.local_modes) == a


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_index_and_owners_are_inverse(layout):
    seen = set()
    replication = layout.num_threads * layout.local_size // layout.size
    for idx in itertools.product(*map(range, layout.shape)):
        owners = layout.owners(idx)
        assert len(owners) == replication
        for t, s in owners:
            assert layout.index(t, s) == idx
        seen.update(owners)
    assert seen == set(all_cells(layout))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_product_formula(data):
    rank = data.draw(st.integers(1, 2))
    a = data.draw(layouts(rank=rank, max_factors=2, max_cells=64))
    b = data.draw(layouts(rank=rank, max_factors=2, max_cells=64))
    p = a * b
    assert p.num_threads == a.num_threads * b.num_threads
    assert p.local_size == a.local_size * b.local_size
    assert p.shape == tuple(x * y for x, y in zip(a.shape, b.shape))
    for (ta, sa), (tb, sb) in itertools.product(all_cells(a), all_cells(b)):
        expect = tuple(i * n + j for i, j, n in zip(a.index(ta, sa), b.index(tb, sb), b.shape))
        assert p.index(ta * b.num_threads + tb, sa * b.local_size + sb) == expect


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_division_undoes_product(data):
    rank = data.draw(st.integers(1, 3))
    a = data.draw(layouts(rank=rank))
    b = data.draw(layouts(rank=rank))
    assert (a * b) / b == a
    assert (a * b) / (local(*[1] * rank)) == a * b


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_reduce_matches_table(data):
    layout = data.draw(layouts())
    dim = data.draw(st.integers(0, layout.rank - 1))
    r = layout.reduce(dim)
    assert r.num_threads == layout.num_threads and r.shape[dim] == 1
    zeroed = lambda idx: tuple(0 if d == dim else i for d, i in enumerate(idx))  # noqa: E731
    for t in range(layout.num_threads):
        firsts = list(dict.fromkeys(zeroed(layout.index(t, s)) for s in range(layout.local_size)))
        assert [r.index(t, s) for s in range(r.local_size)] == firsts
    dropped = layout.reduce(dim, keepdim=False)
    assert dropped == r.reshape(r.shape[:dim] + r.shape[dim + 1:])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_permute_matches_table(data):
    layout = data.draw(layouts())
    perm = data.draw(st.permutations(range(layout.rank)))
    p = layout.permute(perm)
    assert p.shape == tuple(layout.shape[i] for i in perm)
    table = layout.index_table()
    coords = np.stack(np.unravel_index(table, layout.shape))       # (rank, T, L)
    assert np.array_equal(p.index_table(), np.ravel_multi_index(tuple(coords[list(perm)]), p.shape))
    assert p.permute(np.argsort(perm).tolist()) == layout


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_reshape_keeps_flat_index(data):
    layout = data.draw(layouts())
    flat = layout.reshape([layout.size])
    assert np.array_equal(flat.index_table(), layout.index_table())
    assert flat.reshape(layout.shape) == layout
    shape = data.draw(factorizations(layout.size))
    try:
        r = layout.reshape(shape)
    except LayoutError:
        return
    assert r.shape == tuple(shape) and np.array_equal(r.index_table(), layout.index_table())


def test_reshape_examples():
    assert spatial(2, 3).reshape([3, 2]) == spatial(3, 2)
    assert C.reshape([2, 8, 8]) == local(2, 1, 1) * spatial(1, 8, 4) * local(1, 1, 2)
    with pytest.raises(LayoutError, match=r"spatial\(2\)\*local\(3\)"):
        (spatial(2) * local(3)).reshape([3, 2])   # f = 3t + s: (f // 2, f % 2) mixes t and s


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_concat(data):
    a = data.draw(layouts(rank=1, max_cells=32))
    b = data.draw(layouts(rank=2, max_cells=32))
    c = concat(a, b)
    assert c.shape == a.shape + b.shape
    for (ta, sa), (tb, sb) in itertools.product(all_cells(a), all_cells(b)):
        assert c.index(ta * b.num_threads + tb, sa * b.local_size + sb) == a.index(ta, sa) + b.index(tb, sb)


def test_slice():
    assert C.slice([8, 0], [8, 8]) == spatial(8, 4) * local(1, 2)
    assert local(4, 4).slice([2, 0], [2, 4]) == local(2, 4)
    sub = (local(2, 2) * spatial(4, 8)).slice([0, 8], [8, 8])   # slots 1 and 3 of each thread
    assert sub == local(2, 1) * spatial(4, 8) and sub.num_threads == 32
    with pytest.raises(LayoutError, match="threads would hold nothing"):
        C.slice([0, 0], [16, 4])
    with pytest.raises(LayoutError, match="aligned"):
        C.slice([4, 0], [8, 8])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_slice_holds_the_same_elements(data):
    layout = data.draw(layouts(rank=2))
    shape = [data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0])) for n in layout.shape]
    offsets = [data.draw(st.integers(0, n // s - 1)) * s for n, s in zip(layout.shape, shape)]
    try:
        sub = layout.slice(offsets, shape)
    except LayoutError:
        return
    assert sub.num_threads == layout.num_threads
    for t, s in all_cells(sub):
        idx = tuple(i + o for i, o in zip(sub.index(t, s), offsets))
        assert t in [owner for owner, _ in layout.owners(idx)]


def test_vector_length():
    assert local(1, 8).vector_length() == 8            # 8 fp16 = 16 bytes: one vector load
    assert local(1, 8).vector_length() * dtypes.float16.nbits // 8 == 16
    assert C.vector_length() == 2
    assert C.contiguous_runs(5) == [(0, (1, 2), 2), (2, (9, 2), 2)]
    assert (local(1, 2) * spatial(1, 4)).vector_length() == 1
    assert local(4, 1).vector_length() == 1


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_vector_length_is_the_longest_aligned_run(layout):
    def runs_of(n):
        for t, k in itertools.product(range(layout.num_threads), range(0, layout.local_size, n)):
            first = layout.index(t, k)
            if first[-1] % n:
                return False
            for j in range(n):
                if layout.index(t, k + j) != first[:-1] + (first[-1] + j,):
                    return False
        return True
    best = max(n for n in range(1, layout.local_size + 1) if layout.local_size % n == 0 and runs_of(n))
    assert layout.vector_length() == best


@settings(max_examples=100, deadline=None)
@given(layouts())
def test_index_exprs_evaluate_to_index(layout):
    exprs = layout.index_exprs(t_var, s_var)
    t = np.arange(layout.num_threads)[:, None]
    s = np.arange(layout.local_size)[None, :]
    values = [np.broadcast_to(evaluate(e, {t_var: t, s_var: s}), (len(t), s.shape[1])) for e in exprs]
    for ti, si in all_cells(layout):
        assert tuple(int(v[ti, si]) for v in values) == layout.index(ti, si)
        assert tuple(evaluate(e, {t_var: ti, s_var: si}) for e in exprs) == layout.index(ti, si)
    idx_vars = [Var(f"i{d}", dtypes.int32) for d in range(layout.rank)]
    thread, slot = layout.owner_exprs(idx_vars)
    for idx in itertools.product(*map(range, layout.shape)):
        env = dict(zip(idx_vars, idx))
        assert (evaluate(thread, env), evaluate(slot, env)) == layout.owners(idx)[0]


def test_index_exprs_are_plain_integer_arithmetic():
    row, col = C.index_exprs(t_var, s_var)
    assert str(row) == "s // 2 * 8 + t // 4" and str(col) == "t % 4 * 2 + s % 2"


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_text_round_trip(layout):
    assert parse_layout(str(layout)) == layout


def test_mode_form_text_for_layouts_that_are_no_product():
    odd = register_layout([4, 4], [2, 2, 4], [1, 0], [2])   # the two row modes in swapped thread order
    assert str(odd) == "register_layout([4,4],[2,2,4],[1,0],[2])"
    assert parse_layout(str(odd)) == odd
    assert [odd.index(t, 0)[0] for t in range(4)] == [0, 2, 1, 3]


def test_errors_name_both_layouts():
    with pytest.raises(LayoutError, match=r"local\(2,1\).*local\(3\)"):
        local(2, 1) * local(3)
    with pytest.raises(LayoutError, match=r"local\(4\).*local\(3\)"):
        local(4) / local(3)
    with pytest.raises(LayoutError, match=r"spatial\(4\).*local\(2\)"):
        spatial(4) / local(2)
    with pytest.raises(LayoutError, match=r"local\(2,1\)\*spatial\(8,4\)\*local\(1,2\).*\[0, 0\]"):
        C.permute([0, 0])
    with pytest.raises(LayoutError, match=r"spatial\(2,3\).*\[5\]"):
        spatial(2, 3).reshape([5])
    with pytest.raises(LayoutError, match="outside"):
        C.index(32, 0)
    with pytest.raises(LayoutError, match="outside"):
        C.owners((16, 0))
    with pytest.raises(LayoutError):
        local(0, 2)


def _mode_forms(shape, replicas=(None, 2)):
    """Every mode form of ``shape``: each dim split every way, modes on either axis in any order,
    optionally with one replicated entry anywhere on the thread axis."""
    def splits(n):
        if n == 1:
            return [[]]
        return [[d] + rest for d in range(2, n + 1) if n % d == 0 for rest in splits(n // d)]
    for per_dim in itertools.product(*(splits(n) for n in shape)):
        modes = [m for dim in per_dim for m in dim]
        ids = range(len(modes))
        for k in range(len(modes) + 1):
            for spatial_set in itertools.combinations(ids, k):
                local_set = [i for i in ids if i not in spatial_set]
                for sp in itertools.permutations(spatial_set):
                    for lo in itertools.permutations(local_set):
                        for rep in replicas:
                            positions = range(len(sp) + 1) if rep else [None]
                            for pos in positions:
                                entries = list(sp) if pos is None else list(sp[:pos]) + [-rep] + list(sp[pos:])
                                yield shape, modes, entries, list(lo)


@pytest.mark.parametrize("shape", [(4, 4), (6,), (2, 3), (2, 6)])
def test_canonical_form_is_unique(shape):
    classes = {}
    for form in _mode_forms(shape):
        layout = RegisterLayout(*form)
        key = (layout.num_threads, layout.local_size, layout.index_table().tobytes())
        classes.setdefault(key, set()).add(layout)
    assert all(len(members) == 1 for members in classes.values())
    assert len({next(iter(m)) for m in classes.values()}) == len(classes)
    for members in classes.values():
        layout = next(iter(members))
        assert parse_layout(str(layout)) == layout
