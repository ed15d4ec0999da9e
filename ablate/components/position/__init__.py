from ablate.components.position import alibi, learned, nope, rope, sinusoidal  # noqa: F401
