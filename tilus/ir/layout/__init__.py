"""Register, shared and global layouts and their algebra (see DESIGN.md, "Layouts")."""
from tilus.ir.layout.algebra import (  # noqa: F401
    concat, contiguous_runs, divide, permute, product, reduce, reshape, same_owners, slice_tile,
    vector_length,
)
from tilus.ir.layout.banks import bank_conflicts, wavefronts  # noqa: F401
from tilus.ir.layout.global_layout import GlobalLayout, global_strided  # noqa: F401
from tilus.ir.layout.mma import (  # noqa: F401
    ldmatrix_addresses, ldmatrix_fragment, mma_fragments, mma_m16n8k8_tf32_a, mma_m16n8k8_tf32_b,
    mma_m16n8k8_tf32_c, mma_m16n8k16_f16_a, mma_m16n8k16_f16_b, mma_m16n8k16_f16_c,
    mma_m16n8k32_s8_a, mma_m16n8k32_s8_b, mma_m16n8k32_s8_c,
)
from tilus.ir.layout.parser import parse_layout  # noqa: F401
from tilus.ir.layout.primitives import (  # noqa: F401
    column_local, column_spatial, local, register_layout, replicate, spatial,
)
from tilus.ir.layout.register import RegisterLayout  # noqa: F401
from tilus.ir.layout.shared import (  # noqa: F401
    SharedLayout, StridedShared, SwizzledShared, column_major, row_major, strided, swizzle,
    swizzle_128b,
)
