"""The mapping engine: YAML files in, Kartra delivery plans out. Pure; no I/O but the load.

    mappings = load_mappings(Path("mappings"))        # MappingError lists every problem
    rendered = mappings["demo-form"].render(payload)  # queued / ignored / rejected

See docs/mappings.md for the file format.
"""

from relay.mapping.compile import load_mapping, load_mappings
from relay.mapping.errors import MappingError, Problem, RenderError
from relay.mapping.model import Action, Form, Lead, Mapping, Rendered, Rule

__all__ = [
    "Action",
    "Form",
    "Lead",
    "Mapping",
    "MappingError",
    "Problem",
    "Rendered",
    "RenderError",
    "Rule",
    "load_mapping",
    "load_mappings",
]
