from ablate.components.norm import layernorm, rmsnorm  # noqa: F401
