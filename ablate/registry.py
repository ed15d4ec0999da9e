"""The component registry: one generic ``Registry``, one instance per slot.

A component is a class registered under a unique name (unique across *all* slots, so ``a+b`` in a
variant string is never ambiguous). It carries a one-line summary (its docstring's first line), the
paper it comes from, a frozen options dataclass, and declared capabilities:

    @register("attention", "gqa", paper="Ainslie et al. 2023, GQA", options=GQAOptions)
    class GroupedQueryAttention(Attention): ...

``provides`` / ``needs`` are capability tags checked across the resolved variant (e.g. ALiBi needs an
attention that ``provides`` ``"attn_bias"``); ``conflicts`` maps a component name to the reason the two
cannot be combined. Checks run when a variant is resolved, before any tensor is made.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ablate.errors import AblateError

SLOTS: tuple[str, ...] = ("position", "norm", "block", "attention", "mlp")


@dataclass(frozen=True)
class NoOptions:
    """Options of a component that has none."""


@dataclass(frozen=True)
class ComponentSpec:
    """Everything the registry knows about one registered component."""

    slot: str
    name: str
    cls: type
    summary: str
    paper: str
    options: type
    provides: frozenset[str] = frozenset()
    needs: frozenset[str] = frozenset()
    conflicts: dict[str, str] = field(default_factory=dict)
    origin: str = "built-in"

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        """Build the frozen options dataclass, rejecting unknown keys and wrong types."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            choices = ", ".join(known) or "none"
            raise AblateError(
                f"{self.name} has no option {unknown[0]!r}; its options are: {choices} "
                f"(see `ablate describe {self.name}`)"
            )
        for key, value in list(values.items()):
            values[key] = _check_range(self.name, key, _coerce(self.name, key, value, known[key]), known[key])
        return self.options(**values)

    def option_defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options())


def _admits_none(annotation: Any) -> bool:
    """Whether an options field's annotation (a type, or its text under ``from __future__ import annotations``)
    allows None: ``float | None``, ``Optional[int]``, ``None``, ``Any``."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return bool(re.search(r"\bNone\b|\bOptional\b|\bAny\b", text))


def _coerce(component: str, key: str, value: Any, f: dataclasses.Field) -> Any:
    """Check one option value against the field's default type (configs hold strings and numbers)."""
    default = f.default if f.default is not dataclasses.MISSING else None
    expected = type(default) if default is not None else None
    if expected is int and f.type in (float, "float"):  # `scale: float = 1` takes 0.5
        expected = float
    if expected is None or isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise AblateError(
        f"option {component}({key}=...) must be {expected.__name__}, got {value!r}; "
        f"e.g. {component}({key}={default!r})"
    )


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def option(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None) -> Any:
    """An options-dataclass field with its range, checked when a variant is resolved (so ``gqa(kv_heads=0)``
    is one line naming the range, not a ZeroDivisionError while the model is built)::

        kv_heads: int = option(2, ge=1)
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"range": bounds})


def _check_range(component: str, key: str, value: Any, f: dataclasses.Field) -> Any:
    """Numbers are finite and inside the field's declared range (``option(..., ge=1)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    example = f"e.g. {component}({key}={f.default!r})" if f.default is not dataclasses.MISSING else ""
    if isinstance(value, float) and not math.isfinite(value):
        raise AblateError(f"option {component}({key}={value}) must be a finite number; {example}")
    for kind, bound in f.metadata.get("range", {}).items():
        sign, ok = _BOUNDS[kind]
        if not ok(value, bound):
            raise AblateError(f"option {component}({key}={value}) must be {sign} {bound:g}; {example}")
    return value


#: the model options of a variant string (``ablate.variant.ModelOptions``), which no component may be named
MODEL_OPTION_NAMES = ("tie", "bias", "dropout", "init_seed", "emb_scale")
_OPTION_TYPES = (bool, int, float, str)


def _check_option_defaults(name: str, options: type) -> None:
    """Every option is a number, boolean or string (what a variant string can spell) and its default lies
    in its own declared range, so a variant that names none of its options is a valid one."""
    for f in dataclasses.fields(options):
        if f.default_factory is not dataclasses.MISSING or not isinstance(f.default, (*_OPTION_TYPES, type(None))):
            shown = "a default_factory" if f.default is dataclasses.MISSING else repr(f.default)
            raise TypeError(f"options of {name!r}: {f.name} defaults to {shown}; an option is a number, boolean or "
                            f"string with a plain default (e.g. {f.name}: float = 1e-5), as a variant string "
                            f"can only spell those")
        try:
            _check_range(name, f.name, _coerce(name, f.name, f.default, f), f)
        except AblateError as err:
            raise TypeError(f"options of {name!r}: the default {f.name}={f.default!r} is outside its own range "
                            f"({str(err).split(' must be ')[-1].split(';')[0]}); change the default or the "
                            "range") from None


class Registry:
    """Components of one slot, by name. Duplicates and wrong base classes are errors."""

    def __init__(self, slot: str, base: type | None = None):
        self.slot = slot
        self.base = base
        self._specs: dict[str, ComponentSpec] = {}

    def add(self, spec: ComponentSpec) -> None:
        if self.base is not None and not issubclass(spec.cls, self.base):
            raise TypeError(
                f"{spec.cls.__qualname__} is registered as {self.slot} {spec.name!r} but does not "
                f"subclass {self.base.__qualname__}"
            )
        self._specs[spec.name] = spec

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ComponentSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[ComponentSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def remove(self, name: str) -> None:
        """Unregister (for tests and plugin reloads)."""
        del self._specs[name]

    def names(self) -> list[str]:
        return sorted(self._specs)


REGISTRIES: dict[str, Registry] = {slot: Registry(slot) for slot in SLOTS}


def set_base(slot: str, base: type) -> None:
    """Called once by each slot's base module so registrations are type-checked."""
    REGISTRIES[slot].base = base


#: how a component is named in a variant string (``ablate.variant`` parses its terms with it)
NAME_PATTERN = r"[A-Za-z_][\w.\-]*"


def register(
    slot: str,
    name: str,
    *,
    paper: str | None = None,
    options: type = NoOptions,
    provides: tuple[str, ...] | frozenset[str] = (),
    needs: tuple[str, ...] | frozenset[str] = (),
    conflicts: dict[str, str] | None = None,
    summary: str | None = None,
) -> Callable[[type], type]:
    """Class decorator: register a component for ``slot`` under ``name``; ``paper`` (required) names the
    paper or source it implements, shown by ``ablate list`` and ``describe``."""
    if not isinstance(paper, str) or not paper.strip():
        raise TypeError(f"register({slot!r}, {name!r}) needs paper=\"...\": the paper or source the component "
                        "implements, e.g. paper=\"Zhang & Sennrich 2019, Root Mean Square Layer Normalization\"")
    if slot not in REGISTRIES:
        raise ValueError(f"unknown slot {slot!r}; slots are: {', '.join(SLOTS)}")
    if not dataclasses.is_dataclass(options) or not options.__dataclass_params__.frozen:
        raise TypeError(f"options of {name!r} must be a frozen dataclass")
    bare = [f.name for f in dataclasses.fields(options)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if bare:  # a variant names only the options it changes: every option needs a default (which fixes its type)
        raise TypeError(f"options of {name!r} need a default for every field; {', '.join(bare)} has none "
                        f"(e.g. {bare[0]}: float = 1e-5)")
    untyped = [f for f in dataclasses.fields(options) if f.default is None and not _admits_none(f.type)]
    if untyped:  # `eps: float = None`: the default fixes no type, and the forward fails on None later
        declared = getattr(untyped[0].type, "__name__", untyped[0].type)
        raise TypeError(f"options of {name!r}: {untyped[0].name} is declared {declared} but defaults to None; "
                        f"give it a default of its type (e.g. {untyped[0].name}: float = 1e-5), or declare it "
                        f"Optional ({untyped[0].name}: float | None = None)")

    _check_option_defaults(name, options)

    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name) or name.endswith(".toml"):
        raise ValueError(f"component name {name!r} cannot be written in a variant; use letters, digits, '_', "
                         "'-' and '.', starting with a letter or '_'")
    from ablate.presets import ARCHITECTURES, SIZES

    if name in ARCHITECTURES or name == "baseline":  # "baseline" is the GPT-2 preset's other name
        raise ValueError(f"component name {name!r} is an architecture preset's (a variant would mean the preset); "
                         "pick another name")
    if name in SIZES:  # `ablate describe tiny` would describe the size
        raise ValueError(f"component name {name!r} is a size preset's (see `ablate list`); pick another name")
    if name in MODEL_OPTION_NAMES:  # `tie` and `tie=false` in one variant would mean two things
        raise ValueError(f"component name {name!r} is a model option's (written {name}=... in a variant); "
                         "pick another name")

    def decorate(cls: type) -> type:
        existing = find(name)
        if existing is not None:
            raise ValueError(
                f"component name {name!r} is already registered ({existing.slot}, from "
                f"{existing.origin}); names are unique across slots"
            )
        doc = summary or (cls.__doc__ or "").strip().splitlines()[0:1]
        text = doc if isinstance(doc, str) else (doc[0] if doc else "")
        if not text:
            raise ValueError(f"component {name!r} needs a docstring (one line: what it is)")
        origin = _ORIGINS[-1]
        if origin == "built-in" and not cls.__module__.startswith("ablate."):
            origin = f"module {cls.__module__}"  # imported directly, e.g. in a notebook
        spec = ComponentSpec(
            slot=slot,
            name=name,
            cls=cls,
            summary=text,
            paper=paper,
            options=options,
            provides=frozenset(provides),
            needs=frozenset(needs),
            conflicts=dict(conflicts or {}),
            origin=origin,
        )
        REGISTRIES[slot].add(spec)
        cls.component_name = name
        return cls

    return decorate


_ORIGINS: list[str] = ["built-in"]


@contextmanager
def recording_origin(origin: str) -> Iterator[None]:
    """Record ``origin`` (e.g. a plugin's distribution) on every component registered inside."""
    _ORIGINS.append(origin)
    try:
        yield
    finally:
        _ORIGINS.pop()


def find(name: str) -> ComponentSpec | None:
    for reg in REGISTRIES.values():
        if name in reg:
            return reg[name]
    return None


def registered(pattern: str | None = None) -> list[ComponentSpec]:
    """The components registered so far, slot by slot; ``pattern`` filters names (``rope*``) or picks a slot.

    This module is a leaf: it does not load the built-ins or plugins (``ablate.catalog`` does).
    """
    specs = [s for slot in SLOTS for s in REGISTRIES[slot]]
    if pattern is None:
        return specs
    if pattern in REGISTRIES:
        return [s for s in specs if s.slot == pattern]
    return [s for s in specs if fnmatch.fnmatch(s.name, pattern)]


def lookup_registered(name: str, slot: str | None = None, also: dict[str, list[str]] | None = None) -> ComponentSpec:
    """The registered component called ``name``; unknown names fail with the closest matches and all choices.

    ``also`` names other kinds of valid words (e.g. presets) for the suggestions and the message.
    """
    spec = find(name)
    if spec is not None and (slot is None or spec.slot == slot):
        return spec
    pool = REGISTRIES[slot].names() if slot else [s.name for s in registered()]
    others = also or {}
    close = difflib.get_close_matches(name, pool + [w for words in others.values() for w in words], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    if spec is not None:  # exists, but in another slot
        raise AblateError(f"{name!r} is a {spec.slot} component, not a {slot} component{hint}")
    where = f"{slot} component" if slot else " or ".join(["component", *others])
    listing = "; ".join([f"components: {', '.join(pool)}", *(f"{k}s: {', '.join(v)}" for k, v in others.items())])
    raise AblateError(f"unknown {where} {name!r}{hint} ({listing}; run `ablate list`; a plugin file's "
                      f"component needs --plugin FILE.py before the command)")
