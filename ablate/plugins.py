"""Plugins: components from installed packages (entry points) or files the user names.

(Stub: filled in by the plugins work.)
"""

from __future__ import annotations


def autoload() -> None:
    """Import every installed plugin once (entry-point group ``ablate.plugins``)."""


def load_file(path: str) -> None:
    """Import a local plugin file the user named with ``--plugin``."""
    raise NotImplementedError


def loaded_plugins() -> list[dict[str, str]]:
    """Provenance of what was loaded: distribution + version, or file path + content hash."""
    return []
