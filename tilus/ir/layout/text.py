"""Printing register layouts: as a product of primitives where one exists, else in mode form.

Each canonical mode (and each replicated entry) is one factor; the factors must be ordered so that
every dimension, the thread axis and the slot axis list them from outer to inner. Such an order,
when one exists, is found deterministically and neighbouring factors of one kind are grouped into
``local``/``spatial`` (dimensions increasing) or ``column_local``/``column_spatial`` (decreasing).
Equal layouts have one canonical form, hence one text.
"""
from __future__ import annotations

from dataclasses import dataclass

from tilus.ir.layout.register import RegisterLayout


@dataclass
class _Factor:
    kind: str            # "local", "spatial" or "replicate"
    dim: int | None
    size: int


def _groups(layout: RegisterLayout) -> list[list[_Factor]] | None:
    """The single-mode factors, in an order whose product is the layout, grouped into primitives;
    None when no order exists."""
    factors = [_Factor("local", d, s) for d, s in zip(layout.mode_dims, layout.mode_shape)]
    chains: list[list[int]] = [[k for k, d in enumerate(layout.mode_dims) if d == dim]
                               for dim in range(layout.rank)]
    spatial = []
    for e in layout.spatial_modes:
        if e >= 0:
            factors[e].kind = "spatial"
            spatial.append(e)
        else:
            factors.append(_Factor("replicate", None, -e))
            spatial.append(len(factors) - 1)
    chains += [spatial, list(layout.local_modes)]
    preds: dict[int, set[int]] = {k: set() for k in range(len(factors))}
    for chain in chains:
        for x, y in zip(chain, chain[1:]):
            preds[y].add(x)
    done: set[int] = set()
    groups: list[list[_Factor]] = []
    while len(done) < len(factors):
        ready = [k for k in range(len(factors)) if k not in done and preds[k] <= done]
        if not ready:
            return None
        joining = [k for k in ready if groups and _extends(groups[-1], factors[k])]
        k = min(joining or ready)
        if joining:
            groups[-1].append(factors[k])
        else:
            groups.append([factors[k]])
        done.add(k)
    return groups


def _dim(f: _Factor) -> int:
    """The dimension of a local or spatial factor (a replicated one has none)."""
    assert f.dim is not None
    return f.dim


def _extends(group: list[_Factor], f: _Factor) -> bool:
    """Whether ``f`` extends ``group`` into one primitive (same kind, strictly monotone dims)."""
    if f.kind == "replicate" or f.kind != group[0].kind:
        return False
    dims = [_dim(g) for g in group] + [_dim(f)]
    steps = {(b > a) - (b < a) for a, b in zip(dims, dims[1:])}
    return len(steps) == 1 and 0 not in steps


def format_register(layout: RegisterLayout) -> str:
    """The canonical text of a register layout; ``parse_layout`` reads it back."""
    groups = _groups(layout)
    if groups is None:
        return (f"register_layout({_ints(layout.shape)},{_ints(layout.mode_shape)},"
                f"{_ints(layout.spatial_modes)},{_ints(layout.local_modes)})")
    terms = [_primitive_text(g, layout.rank) for g in groups]
    if all(g[0].kind == "replicate" for g in groups) and (layout.rank or not groups):
        terms.insert(0, f"local({','.join(map(str, layout.shape))})")  # carries the rank
    return "*".join(terms)


def _primitive_text(group: list[_Factor], rank: int) -> str:
    if group[0].kind == "replicate":
        return f"replicate({group[0].size})"
    sizes = [1] * rank
    for f in group:
        sizes[_dim(f)] = f.size
    column = len(group) > 1 and _dim(group[1]) < _dim(group[0])
    return f"{'column_' if column else ''}{group[0].kind}({','.join(map(str, sizes))})"


def _ints(values: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, values)) + "]"
