from ablate.components.block import parallel, post, pre, sandwich  # noqa: F401
