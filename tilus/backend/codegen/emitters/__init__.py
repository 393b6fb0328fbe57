"""The instruction emitters, one module per instruction family; importing registers them."""
from tilus.backend.codegen.emitters import (  # noqa: F401
    compute, dot, memory, shape, sync,
)
