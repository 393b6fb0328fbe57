"""``tilus.ops.compile_matmul``: the kernel ``tilus.ops.matmul`` would launch, built without a GPU.

    b = tilus.ops.compile_matmul(qw, m=1, arch="sm_90", act=torch.float16)
    b.schedule, b.sass, b.resources, b.cuda_source        # what runs for M = 1
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

from tilus.errors import ArgumentError
from tilus.ops.matmul import _ACT, heuristic_schedule, kernel_for, stage_bytes, weight_meta
from tilus.ops.mixed import MixedQuantizedWeight
from tilus.ops.mixed_matmul import mixed_kernel_for, mixed_schedule
from tilus.ops.quantize import QuantizedWeight
from tilus.transforms.shared_memory import max_shared_memory_bytes


@dataclass
class MatmulBuild:
    """The QuantMatmul Script, its schedule and its CompiledKernel (attributes of the kernel,
    such as ``sass``, ``resources``, ``cuda_source``, are read through)."""

    script: Any
    schedule: dict
    kernel: Any

    def __getattr__(self, name: str) -> Any:
        if name in ("script", "schedule", "kernel"):
            raise AttributeError(name)
        return getattr(self.kernel, name)

    def loop_cost(self) -> dict:
        """The static cost of one steady-state iteration of the main loop, from the SASS
        (``CompiledKernel.main_loop_cost``): instructions, per weight element and thread, by
        class."""
        cost = self.kernel.main_loop_cost()
        # m16n8k16: one mma covers 4 B elements per thread; warp rows (warps 8) share B
        elements = cost.mma * 4 / (self.script.warps // 4)
        return {"instructions": cost.instructions, "weight_elements_per_thread": elements,
                "instructions_per_weight_element": cost.instructions / elements,
                "by_class": dict(cost.by_class), "by_opcode": dict(cost.by_opcode)}

    @property
    def stage_bytes(self) -> int:
        """Bytes one pipeline stage brings in: the activation tile, the packed weights and (the
        block-scaled fast path) the scale codes."""
        s = self.script
        return stage_bytes(s.block_m, s.block_k, s.wtype.nbits, s.block_n,
                           s.group_size if s.block_fold is not None and s.stages > 1 else 0)


def compile_matmul(qweight: Union[QuantizedWeight, MixedQuantizedWeight], m: int,
                   arch: str = "sm_90",
                   act: torch.dtype = torch.float16, bias: bool = False,
                   num_sms: int = 132) -> MatmulBuild:
    """Build the kernel ``tilus.ops.matmul`` launches for activations [m, K] x ``qweight`` with the
    heuristic schedule for ``num_sms`` SMs (a tuned schedule, where one is recorded, replaces it
    on a GPU). A MixedQuantizedWeight builds its one ``MixedQuantMatmul``."""
    import tilus

    if not isinstance(qweight, (QuantizedWeight, MixedQuantizedWeight)):
        raise ArgumentError(f"compile_matmul: qweight must be a QuantizedWeight or a "
                            f"MixedQuantizedWeight, got {type(qweight).__name__}")
    if act not in _ACT:
        raise ArgumentError(f"compile_matmul: act must be torch.float16 or torch.bfloat16, "
                            f"got {act}")
    if not isinstance(m, int) or m < 1:
        raise ArgumentError(f"compile_matmul: m must be a positive int, got {m!r}")
    if isinstance(qweight, MixedQuantizedWeight):
        schedule = mixed_schedule(m, qweight, "compiled", num_sms)
        script = mixed_kernel_for(weight_meta(qweight.wide, act), weight_meta(qweight.narrow, act),
                                  _ACT[act], bias, schedule)
        return MatmulBuild(script, schedule, tilus.build(script, arch=arch))
    meta = weight_meta(qweight, act)
    schedule = heuristic_schedule(meta, m, qweight.n, qweight.k, num_sms,
                                  max_shared_memory_bytes(arch))
    script = kernel_for(meta, _ACT[act], bias, schedule)
    return MatmulBuild(script, schedule, tilus.build(script, arch=arch))
