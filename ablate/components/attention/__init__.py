from ablate.components.attention import gqa, heads, mha, mqa  # noqa: F401
