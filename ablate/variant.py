"""Variants are data: a frozen choice of component (+ options) per slot on top of the baseline.

Grammar of a variant string (order never matters)::

    variant := term ("+" term)*
    term    := component ["(" key=value {"," key=value} ")"]   e.g. rope, gqa(kv_heads=2)
             | preset                                          e.g. llama (at most one)
             | variant file                                    e.g. my-variant (variants/my-variant.toml)
             | model option "=" value                          e.g. tie=false, bias=false, dropout=0.1, emb_scale=true

A preset or file is applied first; explicit components then replace its choices slot by slot. Two
explicit components for one slot are an error. The canonical name lists what differs from the
baseline, slot by slot, with non-default options only; the baseline's canonical name is ``baseline``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.config import read_toml
from ablate.errors import AblateError
from ablate.presets import ARCHITECTURES
from ablate.catalog import lookup
from ablate.registry import NAME_PATTERN, SLOTS, ComponentSpec

BASELINE: dict[str, str] = {
    "position": "learned",
    "norm": "layernorm",
    "block": "pre",
    "attention": "mha",
    "mlp": "gelu",
}


@dataclass(frozen=True)
class ModelOptions:
    """Options of the model as a whole, written ``key=value`` in a variant string."""

    tie: bool = True  # share the token embedding with the output head
    bias: bool = True  # biases in linear layers and LayerNorm
    dropout: float = 0.0
    init_seed: int = 0  # another draw of the initial weights, same data order: the A/A control (0 = the run's seed)
    emb_scale: bool = False  # multiply token embeddings by sqrt(d_model) (Vaswani et al. 2017, section 3.4)


@dataclass(frozen=True)
class Choice:
    slot: str
    name: str
    options: Any  # the component's frozen options dataclass

    @property
    def spec(self) -> ComponentSpec:
        return lookup(self.name, self.slot)

    def changed_options(self) -> dict[str, Any]:
        defaults = self.spec.option_defaults()
        return {k: v for k, v in dataclasses.asdict(self.options).items() if defaults[k] != v}

    def label(self) -> str:
        changed = self.changed_options()
        if not changed:
            return self.name
        return f"{self.name}({','.join(f'{k}={format_value(v)}' for k, v in sorted(changed.items()))})"


@dataclass(frozen=True)
class Variant:
    choices: tuple[Choice, ...]  # one per slot, in SLOTS order
    model: ModelOptions = ModelOptions()

    def __getitem__(self, slot: str) -> Choice:
        for choice in self.choices:
            if choice.slot == slot:
                return choice
        raise KeyError(slot)

    @property
    def name(self) -> str:
        """The canonical name: what differs from the baseline, in slot order, then model options."""
        terms = [c.label() for c in self.choices if c.name != BASELINE[c.slot] or c.changed_options()]
        defaults = ModelOptions()
        terms += [
            f"{f.name}={format_value(getattr(self.model, f.name))}"
            for f in dataclasses.fields(ModelOptions)
            if getattr(self.model, f.name) != getattr(defaults, f.name)
        ]
        return "+".join(terms) or "baseline"

    def to_dict(self) -> dict[str, Any]:
        """Strings, numbers and booleans only, so it round-trips through JSON, MLflow and Optuna."""
        out: dict[str, Any] = {c.slot: {"component": c.name, **dataclasses.asdict(c.options)} for c in self.choices}
        out["model"] = dataclasses.asdict(self.model)
        for key in ("init_seed", "emb_scale"):  # absent by default, so variant hashes stay what they were
            if not getattr(self.model, key):
                del out["model"][key]
        return out

    @property
    def hash(self) -> str:
        """Stable across sessions and term order: a digest of the fully resolved variant."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def flat_params(self) -> dict[str, str]:
        """``slot.component`` / ``slot.option`` → value, for MLflow params and tags."""
        flat = {}
        for section, values in self.to_dict().items():
            for key, value in values.items():
                flat[f"{section}.{key}"] = format_value(value)
        return flat


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip("'\"")


_TERM = re.compile(rf"^\s*({NAME_PATTERN}|[^\s+()]+\.toml)\s*(?:\((.*)\))?\s*$")  # a name, or a variant file's path
_MODEL_OPTION = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([^()]+?)\s*$")


def split_terms(text: str) -> list[str]:
    """Split on '+' outside parentheses."""
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise AblateError(f"unbalanced ')' in variant {text!r}")
        if ch == "+" and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise AblateError(f"unbalanced '(' in variant {text!r}")
    terms.append(current)
    if any(not t.strip() for t in terms):
        raise AblateError(f"empty term in variant {text!r}; write terms joined by '+', e.g. rope+swiglu")
    return [t.strip() for t in terms]


def parse_options(component: str, text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    options = {}
    for item in text.split(","):
        if "=" not in item:
            raise AblateError(f"option {item.strip()!r} of {component} needs the form key=value, e.g. {component}(key=1)")
        key, value = item.split("=", 1)
        if key.strip() in options:
            raise AblateError(f"option {key.strip()!r} of {component} is given twice; give it once, e.g. {component}({key.strip()}=...)")
        options[key.strip()] = parse_value(value)
    return options


def variant_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ABLATE_VARIANTS_PATH", "").split(os.pathsep) if p]
    return extra + [Path.cwd() / "variants"]


def find_variant_file(name: str) -> Path | None:
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise AblateError(f"variant file {name} not found")
        return path
    for folder in variant_dirs():
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    return None


def read_variant_file(path: Path) -> str:
    data = read_toml(path, "variant file")
    unknown = set(data) - {"variant", "description"}
    if unknown or not isinstance(data.get("variant"), str):
        raise AblateError(
            f"variant file {path} must hold `variant = \"...\"` (and optionally `description`); "
            f"found keys: {', '.join(sorted(data)) or 'none'}"
        )
    return data["variant"]


def parse_variant(text: str, _seen: tuple[str, ...] = ()) -> Variant:
    """Resolve a variant string (see the module docstring) and check it, before any tensor exists."""
    if not isinstance(text, str) or not text.strip():
        raise AblateError(f"the variant is empty ({text!r}); give one, e.g. baseline, rope or rope+swiglu")
    text = text.strip()
    if text == "baseline":
        text = "gpt2"
    base: dict[str, tuple[str, dict]] = {}
    base_model: dict[str, Any] = {}
    base_from: str | None = None
    explicit: dict[str, tuple[str, dict]] = {}
    model: dict[str, Any] = {}
    for term in split_terms(text):
        option = _MODEL_OPTION.match(term)
        if option and "(" not in term:
            key, value = option.group(1), parse_value(option.group(2))
            if key not in {f.name for f in dataclasses.fields(ModelOptions)}:
                raise AblateError(
                    f"unknown model option {key!r} in {text!r}; model options are: "
                    f"{', '.join(f.name for f in dataclasses.fields(ModelOptions))}"
                )
            if key in model:
                raise AblateError(f"model option {key!r} is given twice in {text!r}")
            model[key] = value
            continue
        match = _TERM.match(term)
        if not match:
            raise AblateError(f"cannot parse {term!r} in variant {text!r}; expected e.g. rope, gqa(kv_heads=2) or tie=false")
        name, args = match.group(1), match.group(2)
        nested = _expand_named(name, args, _seen)
        if nested is not None:
            if base_from is not None:
                raise AblateError(
                    f"{base_from!r} and {name!r} are both presets or variant files; a variant builds on at most one"
                )
            base_from = name
            base = {c.slot: (c.name, dataclasses.asdict(c.options)) for c in nested.choices}
            base_model = dataclasses.asdict(nested.model)
            continue
        try:
            spec = lookup(name, also={"preset": list(ARCHITECTURES)})
        except AblateError as err:  # say where a variant file of that name was looked for
            looked = " or ".join(str(folder / f"{name}.toml") for folder in variant_dirs())
            raise AblateError(f"{err}; no variant file {looked} either (variant files are looked up in ./variants "
                              "and the folders on ABLATE_VARIANTS_PATH)") from None
        if spec.slot in explicit:
            other = explicit[spec.slot][0]
            raise AblateError(
                f"{other} and {name} both fill the {spec.slot} slot; a variant has one {spec.slot} component, choose one"
            )
        explicit[spec.slot] = (name, parse_options(name, args))

    choices = []
    for slot in SLOTS:
        name, opts = explicit.get(slot) or base.get(slot) or (BASELINE[slot], {})
        spec = lookup(name, slot)
        choices.append(Choice(slot, name, spec.make_options(opts)))
    merged = {**base_model, **model}
    for f in dataclasses.fields(ModelOptions):
        if f.name in merged:
            merged[f.name] = _check_model_option(f.name, merged[f.name], f.default)
    model_options = ModelOptions(**merged)
    variant = Variant(tuple(choices), model_options)
    check_compatibility(variant)
    return variant


def _expand_named(name: str, args: str | None, seen: tuple[str, ...]) -> Variant | None:
    """A preset or variant file named ``name``, resolved; None when ``name`` is neither."""
    if name in ARCHITECTURES:
        source = ARCHITECTURES[name][0]
    else:
        path = find_variant_file(name)
        if path is None:
            return None
        source = read_variant_file(path)
    if args:
        raise AblateError(f"{name!r} is a preset; it takes no options (add components after it instead)")
    if name in seen:
        raise AblateError(f"variant {name!r} refers to itself ({' -> '.join(seen + (name,))})")
    return parse_variant(source, seen + (name,)) if source else _baseline()


def _check_model_option(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise AblateError(f"model option {key}={value!r} must be {type(default).__name__}, e.g. {key}={format_value(default)}")
    if key == "init_seed" and value < 0:
        raise AblateError(f"model option init_seed={value} must be 0 or more (0 keeps the run's own initialisation)")
    if key == "dropout" and not 0.0 <= value < 1.0:
        raise AblateError(f"model option dropout={value!r} must be in [0, 1), e.g. dropout=0.1")
    return value


def _baseline() -> Variant:
    return Variant(tuple(Choice(s, n, lookup(n, s).make_options()) for s, n in BASELINE.items()))


def check_compatibility(variant: Variant) -> None:
    """Declared needs and conflicts, checked once per variant."""
    specs = [c.spec for c in variant.choices]
    provided = set().union(*(s.provides for s in specs))
    for spec in specs:
        missing = spec.needs - provided
        if missing:
            raise AblateError(
                f"{spec.name} needs {', '.join(sorted(missing))}, which no component of this variant provides "
                f"({', '.join(s.name for s in specs)}); pick a component that does (see `ablate describe {spec.name}`)"
            )
        for other in specs:
            if other.name in spec.conflicts:
                raise AblateError(f"{spec.name} cannot be combined with {other.name}: {spec.conflicts[other.name]}")


def foreign_origins(texts) -> dict[str, str]:
    """The origin of every component from outside ablate (a plugin) that the variants or component terms
    in ``texts`` use: ``{"scalenorm": "file sha256:1a2b3c4d5e6f"}`` (a file by its content). A study's identity holds
    it, so runs of two versions of a plugin's code are never pooled. Texts that do not parse are left out
    (they are refused where they are used)."""
    out: dict[str, str] = {}
    for text in texts:
        try:
            specs = plugin_specs(parse_variant(text))
        except AblateError:
            continue
        for spec in specs:  # a file by its content, not its path (moved checkouts, other hosts)
            out[spec.name] = re.sub(r"^file .* (sha256:\w+)$", r"file \1", spec.origin)
    return dict(sorted(out.items()))


def plugin_specs(variant: Variant) -> list[ComponentSpec]:
    """The registry entries of ``variant``'s components that come from outside ablate (plugins)."""
    return [spec for spec in (lookup(c.name, c.slot) for c in variant.choices) if spec.origin != "built-in"]
