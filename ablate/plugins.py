"""Plugins: components from installed packages (entry points) or from files the user names.

Two ways in, and no others (nothing is imported from a folder the user neither named nor installed):

- **Installed**: a distribution declares modules in the entry-point group ``ablate.plugins``::

      [project.entry-points."ablate.plugins"]
      dyt = "ablate_dyt"

  ``autoload()`` imports each once per process, right after the built-ins (``catalog.ensure_loaded``).
  ``ABLATE_NO_PLUGINS=1`` turns this off for hermetic runs.
- **A file**: ``ablate --plugin my_norm.py ...`` (repeatable) calls ``load_file``, for quick experiments.
  It loads even when autoload is off: the user named it.

Importing a plugin runs its ``@register`` decorators; each registration records where it came from
(``ComponentSpec.origin``: ``plugin ablate-dyt 0.1.0`` or ``file /abs/my_norm.py sha256:1a2b3c4d5e6f``),
which ``ablate list`` / ``ablate describe`` show. ``loaded_plugins()`` is the provenance every MLflow run
records in its ``ablate.plugins`` tag.

A plugin loads all or nothing: if its import fails (any exception, a duplicate component name
included) the components it registered before failing are removed again. A failing *installed* plugin
is one ``PluginWarning`` naming it and its error, and everything else keeps working; a failing *file*
is the user's explicit request, so it fails the command with a one-line ``AblateError`` naming the file
(and, for an exception or a ``sys.exit`` while it loads, the line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ablate import registry
from ablate.errors import AblateError

ENTRY_POINT_GROUP = "ablate.plugins"
NO_PLUGINS_ENV = "ABLATE_NO_PLUGINS"


class PluginWarning(UserWarning):
    """An installed plugin failed to load and was skipped."""


_AUTOLOADED = False
_LOADED: list[dict[str, str]] = []  # provenance, in load order
_FILES: dict[str, str] = {}  # absolute path -> sha256 of what was executed


def autoload_disabled() -> bool:
    """``ABLATE_NO_PLUGINS`` set to anything but empty, 0, false, no or off."""
    return os.environ.get(NO_PLUGINS_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def autoload() -> None:
    """Import every installed plugin once (entry-point group ``ablate.plugins``)."""
    global _AUTOLOADED
    if _AUTOLOADED or autoload_disabled():
        return
    _AUTOLOADED = True
    for ep in _entry_points():
        _load_entry_point(ep)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """Installed entry points of the group, in a stable order (by name, then distribution)."""
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(eps, key=lambda ep: (ep.name, _distribution(ep)[0]))


def _distribution(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.name, dist.version


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> bool:
    dist, version = _distribution(ep)
    origin = f"plugin {dist} {version}"
    already_imported = ep.module in sys.modules
    try:
        with _registering(origin):
            ep.load()
    except (Exception, SystemExit) as err:  # noqa: BLE001 — any failure of a plugin must not take ablate down
        filename, lineno = _error_location(err)
        warnings.warn_explicit(
            f"ablate plugin {ep.name!r} ({dist} {version}, {ep.value}) failed to load and was skipped: "
            f"{_describe_error(err)} (for its traceback: python -W error::UserWarning -m ablate.cli list; "
            f"{NO_PLUGINS_ENV}=1 skips installed plugins)",
            PluginWarning, filename=filename, lineno=lineno, module="ablate.plugins",
        )
        return False
    if already_imported:
        _adopt(ep.module, origin)
    _LOADED.append({"kind": "entry_point", "name": ep.name, "value": ep.value,
                    "distribution": dist, "version": version})
    return True


def load_file(path: str | os.PathLike) -> None:
    """Import a local plugin file the user named with ``--plugin`` (a no-op if it is already loaded)."""
    _load_builtins_and_installed()  # first, so name clashes are caught here
    given = Path(path).expanduser()
    if given.suffix != ".py":
        raise AblateError(f"plugin {path} is not a .py file; --plugin takes a Python file that registers components")
    try:
        source = given.read_bytes()
    except FileNotFoundError:
        raise AblateError(f"plugin file {path} not found") from None
    except OSError as err:
        raise AblateError(f"cannot read plugin file {path}: {err.strerror or err}") from None
    resolved = str(given.resolve())
    digest = hashlib.sha256(source).hexdigest()
    if resolved in _FILES:
        if _FILES[resolved] != digest:
            raise AblateError(f"plugin file {resolved} changed since it was loaded in this process")
        return
    try:
        code = compile(source, resolved, "exec", dont_inherit=True)  # not this module's __future__ flags
    except SyntaxError as err:
        raise AblateError(f"syntax error in plugin file {resolved}, line {err.lineno}: {err.msg}") from None

    name = _module_name(given.stem, digest)
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up through sys.modules
    argv, sys.argv = sys.argv, [resolved]  # a module-level argparse in the file must not read ablate's flags
    try:
        with _registering(f"file {resolved} sha256:{digest[:12]}"):
            exec(code, module.__dict__)
    except SystemExit as err:  # sys.exit() or argparse at import: ablate would end silently with its code
        del sys.modules[name]
        raise AblateError(f"plugin file {resolved} called sys.exit({err.code!r}) while loading{_line_of(err, resolved)}; "
                          "a plugin file only registers components: put script code under "
                          "`if __name__ == \"__main__\":` (it registered nothing)") from None
    except Exception as err:
        del sys.modules[name]
        if isinstance(err, AblateError) or _raised_by_registry(err):
            raise AblateError(f"plugin file {resolved} cannot register its component: {err}") from None
        if isinstance(err, ModuleNotFoundError) and err.name:  # a missing dependency, not a bug in the plugin
            raise AblateError(f"plugin file {resolved} imports {err.name}, which is not installed here; install it "
                              f"into this environment (pip install ...) or remove the import") from None
        if isinstance(err, ImportError) and "relative import" in str(err):
            raise AblateError(f"plugin file {resolved} uses a relative import, which a single file cannot; import "
                              f"by absolute name, or make it an installed package (docs/plugins.md)") from None
        text = " ".join(str(err).split())[:300]
        raise AblateError(f"plugin file {resolved} raised {type(err).__name__} while loading"
                          f"{_line_of(err, resolved)}: {text}; fix the file (it registered nothing)") from None
    finally:
        sys.argv = argv
    _FILES[resolved] = digest
    _LOADED.append({"kind": "file", "path": resolved, "sha256": digest})


def loaded_plugins() -> list[dict[str, str]]:
    """Provenance of what was loaded: distribution + version, or file path + content hash."""
    _load_builtins_and_installed()
    return [dict(entry) for entry in _LOADED]


# ------------------------------------------------------------------------------------------ helpers
def _load_builtins_and_installed() -> None:
    import ablate.components  # noqa: F401  (registers the built-ins)

    autoload()


@contextmanager
def _registering(origin: str) -> Iterator[None]:
    """Record ``origin`` on everything registered inside; on failure, unregister it all again."""
    before = {slot: set(reg.names()) for slot, reg in registry.REGISTRIES.items()}
    try:
        with registry.recording_origin(origin):
            yield
    except BaseException:
        for slot, reg in registry.REGISTRIES.items():
            for added in set(reg.names()) - before[slot]:
                reg.remove(added)
        raise


def _adopt(module: str, origin: str) -> None:
    """A plugin module imported before autoload (e.g. by its own tests) registered with the default
    origin; give its components their plugin origin."""
    for reg in registry.REGISTRIES.values():
        for spec in list(reg):
            owner = spec.cls.__module__
            default = spec.origin == "built-in" or spec.origin.startswith("module ")
            if default and (owner == module or owner.startswith(module + ".")):
                reg.remove(spec.name)
                reg.add(dataclasses.replace(spec, origin=origin))


def _line_of(err: BaseException, filename: str) -> str:
    """``", line N"``: the last line of ``filename`` in the exception's traceback ("" if none)."""
    return next((f", line {f.lineno}" for f in reversed(traceback.extract_tb(err.__traceback__))
                 if f.filename == filename), "")


def _module_name(stem: str, digest: str) -> str:
    base = "ablate_plugin_" + re.sub(r"\W", "_", stem)
    return base if base not in sys.modules else f"{base}_{digest[:12]}"


def _raised_by_registry(err: BaseException) -> bool:
    """Whether ``err`` is a registration error (duplicate name, wrong base class, no docstring)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve() == Path(registry.__file__).resolve()


def _describe_error(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _error_location(err: BaseException) -> tuple[str, int]:
    """Where a plugin failed: its deepest frame outside ablate itself (the plugin's own line, e.g.
    the ``@register`` of a duplicate name), so the warning shows that line."""
    if isinstance(err, SyntaxError) and err.filename:
        return err.filename, err.lineno or 0
    ours = Path(registry.__file__).resolve().parent
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        path = Path(frame.filename)
        if path.is_file() and ours not in path.resolve().parents:
            return frame.filename, frame.lineno or 0
    return (frames[-1].filename, frames[-1].lineno or 0) if frames else ("ablate", 0)


__all__ = ["ENTRY_POINT_GROUP", "NO_PLUGINS_ENV", "PluginWarning", "autoload", "autoload_disabled",
           "load_file", "loaded_plugins"]
