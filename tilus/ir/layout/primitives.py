"""The primitive register layouts that every other layout is a product of."""
from __future__ import annotations

from tilus.errors import LayoutError
from tilus.ir.layout.register import RegisterLayout, _Mode, _positive, _Work


def _primitive(shape: tuple[int, ...], spatial: bool, column: bool) -> RegisterLayout:
    """One mode per dimension, all on one axis, row-major (dim 0 slowest) or column-major."""
    sizes = [_positive(s, "shape") for s in shape]
    modes = [_Mode(s, d) for d, s in enumerate(sizes)]
    order = list(reversed(modes)) if column else modes
    return _Work(sizes, [[m] for m in modes], order if spatial else [],
                 [] if spatial else order).build()


def local(*shape: int) -> RegisterLayout:
    """One thread holds the whole tile, in row-major slot order."""
    return _primitive(shape, spatial=False, column=False)


def spatial(*shape: int) -> RegisterLayout:
    """One element per thread, threads numbered in row-major order."""
    return _primitive(shape, spatial=True, column=False)


def column_local(*shape: int) -> RegisterLayout:
    """One thread holds the whole tile, in column-major slot order (dimension 0 fastest)."""
    return _primitive(shape, spatial=False, column=True)


def column_spatial(*shape: int) -> RegisterLayout:
    """One element per thread, threads numbered in column-major order (dimension 0 fastest)."""
    return _primitive(shape, spatial=True, column=True)


def replicate(n: int) -> RegisterLayout:
    """A rank-0 layout of ``n`` threads that all hold the one element: broadcast in products.

    A rank-0 layout multiplies with a layout of any rank, so ``spatial(8, 1) * replicate(4)``
    spreads 8 rows over 32 threads, four consecutive threads holding each row.
    """
    if not isinstance(n, int) or n < 1:
        raise LayoutError(f"replicate needs a positive thread count, got {n!r}")
    return _Work([], [], [_Mode(n, None)], []).build()


def register_layout(shape: list[int], mode_shape: list[int], spatial_modes: list[int],
                    local_modes: list[int]) -> RegisterLayout:
    """A layout from its mode form (see RegisterLayout); the text form of layouts that are no product."""
    return RegisterLayout(shape, mode_shape, spatial_modes, local_modes)
