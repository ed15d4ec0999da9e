"""The catalog: every component there is, built-in and plugin, loaded once per process.

The registry (``ablate.registry``) only stores what registers itself; this layer does the loading
(the built-ins, then the installed plugins' entry points) before answering, so everything that asks
"which components exist?" goes through here.
"""

from __future__ import annotations

from ablate.registry import ComponentSpec, lookup_registered, registered

_LOADED = False


def ensure_loaded() -> None:
    """Register the built-ins, then the installed plugins (once per process)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from ablate import components  # noqa: F401  (registers the built-ins)
    from ablate.plugins import autoload

    autoload()


def all_specs(pattern: str | None = None) -> list[ComponentSpec]:
    """Every component, slot by slot; ``pattern`` filters names (``rope*``) or picks a slot."""
    ensure_loaded()
    return registered(pattern)


def lookup(name: str, slot: str | None = None, also: dict[str, list[str]] | None = None) -> ComponentSpec:
    """The component called ``name``; unknown names fail with the closest matches and all choices."""
    ensure_loaded()
    return lookup_registered(name, slot, also)
