from ablate.components.mlp import geglu, gelu, relu, relu2, swiglu  # noqa: F401
