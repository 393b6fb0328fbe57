"""Scheduling passes over Programs (see DESIGN.md, "Scheduling passes and the backend")."""
from tilus.transforms.base import Pass, PassManager  # noqa: F401
from tilus.transforms.layout_inference import (  # noqa: F401
    LayoutInference, check_layouts, default_layout, infer_layouts, layout_rule,
)
