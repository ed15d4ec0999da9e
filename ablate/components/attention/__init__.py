from ablate.components.attention import gqa, gru, heads, lstm, mha, mqa  # noqa: F401
