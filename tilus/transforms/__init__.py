"""Scheduling passes over Programs (see DESIGN.md, "Scheduling passes and the backend").

- ``Pass`` (``name``, ``run(program) -> program``) and ``PassManager(passes, dump_dir=None,
  verify=True).run(program)``: verifies the input, runs passes in order, verifies after each, dumps
  ``NN-<pass>.tilus`` files to ``dump_dir`` or ``$TILUS_DUMP_IR``, logs times on the ``tilus`` logger.
- ``LayoutInference`` / ``infer_layouts(program)``: every register tensor gets a register layout
  and every shared tensor a shared layout (``tilus.transforms.layout_inference`` documents the
  rules and their priority); ``layout_rule`` registers the rule of an instruction class;
  ``check_layouts`` checks a program's layouts; ``default_layout`` is the 16-byte-access default.
- ``InsertConversions`` / ``insert_conversions(program)``: after inference, a ``convert_layout``
  wherever an instruction needs a tile in another layout than its own, with a shared scratch tile
  for those that go through shared memory (``tilus.transforms.conversions``).
- ``PlanSharedMemory(arch="sm_90", alignment=128)`` / ``plan_shared_memory(program)``: every
  ``shared_tensor`` gets a byte offset (``AllocateSharedInst.offset``) in one dynamic shared-memory
  arena, tensors with disjoint lifetimes sharing bytes; ``shared_memory_bytes(program)`` is the
  arena's size, ``needs_shared_memory_opt_in(program)`` says whether it is over 48 KB
  (``tilus.transforms.shared_memory`` documents the rules).
- ``InsertBarriers`` / ``insert_barriers(program)``: ``sync()`` where threads may race on shared
  memory (RAW, WAR, WAW, across loop back edges, through reused bytes), and nowhere else;
  ``shared_memory_hazards(program)`` lists the races a program has (``tilus.transforms.barriers``).
- ``default_passes(arch="sm_90")``: [LayoutInference, InsertConversions, PlanSharedMemory,
  InsertBarriers].
"""
from tilus.transforms.base import Pass, PassManager  # noqa: F401
from tilus.transforms.layout_inference import (  # noqa: F401
    LayoutInference, check_layouts, default_layout, infer_layouts, layout_rule,
)
from tilus.transforms.conversions import InsertConversions, insert_conversions  # noqa: F401
from tilus.transforms.shared_memory import (  # noqa: F401
    PlanSharedMemory, SharedMemoryPlan, max_shared_memory_bytes, needs_shared_memory_opt_in,
    plan_shared_memory, shared_memory_bytes,
)
from tilus.transforms.barriers import (  # noqa: F401
    InsertBarriers, insert_barriers, shared_accesses, shared_effects, shared_memory_hazards,
)


def default_passes(arch: str = "sm_90") -> list[Pass]:
    """The scheduling passes a kernel goes through, in order (run them with ``PassManager``)."""
    return [LayoutInference(), InsertConversions(), PlanSharedMemory(arch), InsertBarriers()]
