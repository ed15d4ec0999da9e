"""Built-in components. Importing this package registers every one of them."""

from ablate.components import attention, block, mlp, norm, position  # noqa: F401
