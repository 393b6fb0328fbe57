"""Hypothesis strategies for register layouts: random products of primitives, kept small."""
import math

from hypothesis import strategies as st

from tilus.ir.layout import column_local, column_spatial, local, replicate, spatial

PRIMITIVES = (local, spatial, column_local, column_spatial)


@st.composite
def primitives(draw, rank):
    """A primitive of the given rank, or (rarely) a replicate."""
    if draw(st.integers(0, 7)) == 0:
        return replicate(draw(st.integers(2, 3)))
    ctor = draw(st.sampled_from(PRIMITIVES))
    return ctor(*draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))


@st.composite
def layouts(draw, rank=None, max_factors=3, max_cells=2048):
    """A product of 1..max_factors primitives of one rank with threads*slots <= max_cells."""
    if rank is None:
        rank = draw(st.integers(1, 3))
    layout = draw(primitives(rank))
    for _ in range(draw(st.integers(0, max_factors - 1))):
        nxt = draw(primitives(rank))
        if (layout.num_threads * nxt.num_threads) * (layout.local_size * nxt.local_size) > max_cells:
            break
        layout = layout * nxt
    if layout.rank == 0:
        layout = layout * local(*([1] * rank))
    return layout


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def factorizations(draw, n):
    """A random shape whose sizes multiply to n."""
    shape = []
    while n > 1 and len(shape) < 3:
        d = draw(st.sampled_from(divisors(n)))
        shape.append(d)
        n //= d
    shape.append(n)
    return shape if math.prod(shape) else [1]
