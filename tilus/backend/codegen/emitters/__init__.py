"""The instruction emitters, one module per instruction family; importing registers them."""
from tilus.backend.codegen.emitters import (  # noqa: F401
    compute, convert, dot, memory, shape, sync,
)
