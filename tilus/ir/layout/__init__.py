"""Register, shared and global layouts and their algebra (see DESIGN.md, "Layouts")."""
from tilus.ir.layout.algebra import (  # noqa: F401
    concat, contiguous_runs, divide, permute, product, reduce, reshape, slice_tile, vector_length,
)
from tilus.ir.layout.primitives import (  # noqa: F401
    column_local, column_spatial, local, register_layout, replicate, spatial,
)
from tilus.ir.layout.register import RegisterLayout  # noqa: F401
