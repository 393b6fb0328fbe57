"""Scheduling passes over Programs (see DESIGN.md, "Scheduling passes and the backend").

- ``Pass`` (``name``, ``run(program) -> program``) and ``PassManager(passes, dump_dir=None,
  verify=True).run(program)``: runs passes in order, verifies after each, dumps
  ``NN-<pass>.tilus`` files to ``dump_dir`` or ``$TILUS_DUMP_IR``, logs times on the ``tilus`` logger.
- ``LayoutInference`` / ``infer_layouts(program)``: every register tensor gets a register layout
  and every shared tensor a shared layout (``tilus.transforms.layout_inference`` documents the
  rules and their priority); ``layout_rule`` registers the rule of an instruction class;
  ``check_layouts`` checks a program's layouts; ``default_layout`` is the 16-byte-access default.
"""
from tilus.transforms.base import Pass, PassManager  # noqa: F401
from tilus.transforms.layout_inference import (  # noqa: F401
    LayoutInference, check_layouts, default_layout, infer_layouts, layout_rule,
)
