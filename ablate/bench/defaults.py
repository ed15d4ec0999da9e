"""The benchmarks' default settings, importable without torch (the CLI shows them in ``--help``)."""

DEFAULT_MIXERS = ("mha", "heads", "lstm", "gru")
DEFAULT_CONTEXTS = (64, 128, 256, 512, 1024)
DEFAULT_SIZES = ((64, 4, 128), (128, 4, 256), (256, 8, 256), (256, 8, 512))  # (width, heads, context)
