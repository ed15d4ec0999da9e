"""The built-in MLPs; ``DenseMLP`` / ``GatedMLP`` (with their options) are the two shapes a new MLP can
subclass, overriding only ``activation`` (README, "Add a component in three steps")."""

from ablate.components.mlp import geglu, gelu, relu, relu2, swiglu  # noqa: F401
from ablate.components.mlp._base import DenseMLP, DenseOptions, GatedMLP, GatedOptions

__all__ = ["DenseMLP", "DenseOptions", "GatedMLP", "GatedOptions"]
