"""The task interface, its fixed-alphabet tokenizer, the held-out split and the spec parser.

A *task* is data served by a seeded generator instead of a file. It defines

- its vocabulary: a ``TaskTokenizer`` over a fixed alphabet (one character = one token; padding is
  id 0, the end-of-answer token is ``eot``);
- how a problem is written: ``render(problem) -> (prompt, completion)``; the model reads the prompt
  and must write the completion (an optional trace, the final answer, the end token);
- which target positions count: every completion token (trace included), never a prompt token or
  padding (see ``ablate.tasks.batches.encode_problems``);
- how an answer is scored: ``score(problem, generated_text)``, exact match of the whole final answer
  (the trace is not scored).

Tasks are registered by name (``@register_task("addition")``) and built from a spec string::

    spec   := name ["(" option {"," option} ")"]          e.g. addition(digits=3,reverse=false)
    option := key "=" value                               ints, true/false, operator strings

An optional ``task:`` prefix is accepted (``task:addition(digits=3)``, as ``--data`` takes it).

Held-out split: a problem ``(a, op, b)`` is held out iff ``blake2b("a op b") % 10 == 0``
(``is_heldout``). Training samplers reject held-out problems and evaluation samplers keep only
held-out ones, so the two are disjoint by construction, for every task, option and seed (reversed
and normal answer order share one split, as do all calculators containing an operator).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ablate.data.tokenizers import Tokenizer
from ablate.errors import AblateError

PAD = "_"
END = "$"
#: One alphabet for every built-in task, so a model trained on one task can be fine-tuned on another.
#: ``r`` separates quotient and remainder, ``;`` trace steps, ``>`` introduces the final answer.
ALPHABET = PAD + "0123456789+-*/=r;>" + END

HELDOUT_MODULUS = 10  # one problem in ten is held out
SPLIT_SALT = b"ablate-task-split-v1"
SPLIT_RULE = f"blake2b(salt|a op b) % {HELDOUT_MODULUS} == 0 is held out"
TASK_PREFIX = "task:"


class TaskTokenizer(Tokenizer):
    """One token per character of a fixed ``alphabet``; id 0 is padding, ``eot`` the end token."""

    def __init__(self, alphabet: str = ALPHABET, end: str = END, pad: str = PAD) -> None:
        if len(set(alphabet)) != len(alphabet) or alphabet[0] != pad or end not in alphabet:
            raise ValueError("alphabet must be distinct characters, start with the pad and hold the end token")
        self.name = "task"
        self.alphabet = alphabet
        self.vocab_size = len(alphabet)
        self.stoi = {c: i for i, c in enumerate(alphabet)}
        self.pad = 0
        self.eot = self.stoi[end]
        self.fingerprint = hashlib.sha256(("task:" + alphabet).encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            bad = sorted(set(text) - set(self.stoi))
            raise AblateError(
                f"the task vocabulary has no token for {', '.join(map(repr, bad))}; write problems with "
                f"the characters {self.alphabet[1:]!r} only (e.g. 123+456=)"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)


@dataclass(frozen=True, order=True)
class Problem:
    """``a op b``: non-negative integer operands and one operator of ``+ - * /``."""

    a: int
    op: str
    b: int

    @property
    def length(self) -> int:
        """The operand length the problem counts under: digits of its longer operand."""
        return max(len(str(self.a)), len(str(self.b)))

    def __str__(self) -> str:
        return f"{self.a}{self.op}{self.b}"


def split_hash(p: Problem) -> int:
    h = hashlib.blake2b(SPLIT_SALT + f"|{p.a}{p.op}{p.b}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def is_heldout(p: Problem) -> bool:
    """Whether ``p`` belongs to the held-out evaluation part of the problem space."""
    return split_hash(p) % HELDOUT_MODULUS == 0


OP_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
PROMPT_OPERATORS = {"×": "*", "÷": "/", "−": "-"}  # a typed problem may use the signs a task spec accepts


class Task:
    """A synthetic task. Subclasses set ``Options`` (a frozen dataclass) and implement the hooks."""

    name: ClassVar[str]
    Options: ClassVar[type]
    summary: ClassVar[str] = ""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.tokenizer = TaskTokenizer()
        self.validate()

    # ------------------------------------------------------------------ identity
    @property
    def spec(self) -> str:
        """The canonical spec: every option, in declaration order (``addition(digits=3,reverse=true)``)."""
        parts = [f"{f.name}={_format_value(getattr(self.options, f.name))}" for f in dataclasses.fields(self.options)]
        return f"{self.name}({','.join(parts)})" if parts else self.name

    def __repr__(self) -> str:
        return f"<Task {self.spec}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Task) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    # ------------------------------------------------------------------ hooks
    def validate(self) -> None:
        """Raise ``AblateError`` for option values that make no sense."""

    @property
    def digits(self) -> int:
        """The longest operand length served in training."""
        raise NotImplementedError

    @property
    def ops(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def problem_spec(self) -> str:
        """What decides which problems are served (not how they are written): equal for two tasks iff
        they see the same problems for a seed, e.g. ``addition`` with reversed or normal answers."""
        return f"ops={''.join(self.ops)},digits={self.digits}"

    def sample(self, rng: np.random.Generator, n: int, *, split: str = "train",
               length: int | None = None) -> list[Problem]:
        """``n`` problems drawn with ``rng`` from the ``train`` or ``heldout`` part of the space.

        ``length=None``: each operand's digit count uniform in 1..digits, then its value uniform
        among the numbers with that many digits (0-9 for one digit). ``length=L``: one operand
        (chosen at random) has exactly L digits, the other uniform in 1..L, so the problem's
        length (its longer operand) is L.
        """
        raise NotImplementedError

    def render(self, p: Problem) -> tuple[str, str]:
        """(prompt, completion): the model reads the prompt and is trained on the completion."""
        raise NotImplementedError

    def answer(self, p: Problem) -> str:
        """The final answer as the model must write it (before the end token)."""
        raise NotImplementedError

    def read_answer(self, text: str):
        """The value a written final answer stands for (reversed digits read back), or None."""
        raise NotImplementedError

    def max_len(self, digits: int) -> int:
        """An upper bound on prompt + completion tokens for operands of at most ``digits`` digits."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def final_answer(self, generated: str) -> str | None:
        """The final answer in a generated completion: the text before the first end token, after
        the last ``>`` when a trace precedes it. None when no end token was written."""
        end = generated.find(END)
        if end < 0:
            return None
        text = generated[:end]
        return text.rsplit(">", 1)[-1]

    def read_problem(self, prompt: str) -> Problem:
        """The problem a typed prompt asks (``"123+456="`` or ``"123+456"``), checked against this task:
        two non-negative integers joined by one of its operators, never a division by zero."""
        text = "".join(PROMPT_OPERATORS.get(ch, ch) for ch in prompt.strip()).removesuffix("=")
        match = re.fullmatch(r"(\d+)([-+*/])(\d+)", text)
        example = f"{12}{self.ops[0]}{3}="
        if match is None:
            raise AblateError(f"{prompt.strip()!r} is not a problem of {self.spec}: write two non-negative whole "
                              f"numbers joined by one of its operators ({' '.join(self.ops)}), e.g. --prompt \"{example}\"")
        p = Problem(int(match[1]), match[2], int(match[3]))
        if p.op not in self.ops:
            raise AblateError(f"this run's task {self.spec} was never shown {p.op!r}; ask a problem with "
                              f"{' or '.join(repr(op) for op in self.ops)}, e.g. --prompt \"{example}\"")
        if p.op == "/" and p.b == 0:
            raise AblateError(f"{p} divides by zero, which has no answer (the task never asks it); "
                              f"ask another problem, e.g. --prompt \"17/5=\"")
        return p

    def score(self, p: Problem, generated: str) -> bool:
        """Exact match of the whole final answer (the trace, if any, is not scored)."""
        return self.final_answer(generated) == self.answer(p)

    def text(self, p: Problem) -> str:
        prompt, completion = self.render(p)
        return prompt + completion

    def train_context(self) -> int:
        """Positions a training batch needs: the longest problem at ``digits``, less one (x drops the last token)."""
        return self.max_len(self.digits) - 1

    def eval_lengths(self) -> list[int]:
        """Operand lengths evaluated: 1 .. 2·digits (those beyond ``digits`` are never trained on)."""
        return list(range(1, 2 * self.digits + 1))

    def eval_context(self, lengths: Sequence[int] | None = None) -> int:
        """Positions a model needs to decode every evaluation problem (the longest eval length)."""
        return self.max_len(max(lengths or self.eval_lengths())) - 1


# ---------------------------------------------------------------------------- registry + parser
# The built-ins register themselves when ablate.tasks.arithmetic is imported, which the package
# __init__ does before any of its modules can be used (importing ablate.tasks.base runs it first),
# so this module needs no import of arithmetic (that would be an import cycle).
TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        TASKS[name] = cls
        return cls

    return deco


def task_names() -> list[str]:
    return sorted(TASKS)


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


def is_task_spec(data: str) -> bool:
    """Whether a ``--data`` value names a task (``task:addition(...)``) rather than a corpus."""
    return str(data).strip().lower().startswith(TASK_PREFIX)


def parse_task(spec: str) -> Task:
    """Build the task named by ``spec`` (``addition(digits=3)``, with or without ``task:``)."""
    s = str(spec).strip()
    if s.lower().startswith(TASK_PREFIX):
        s = s[len(TASK_PREFIX):]
    m = _SPEC.match(s)
    if not m:
        raise AblateError(f"cannot read task {spec!r}; write name(key=value,...), e.g. addition(digits=3)")
    name, body = m.group(1).lower(), m.group(2)
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise AblateError(f"unknown task {name!r}{hint} (tasks: {', '.join(task_names())})")
    cls = TASKS[name]
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    values: dict[str, Any] = {}
    if body is not None and body.strip():
        for item in body.split(","):
            if "=" not in item:
                raise AblateError(f"task {name}: option {item.strip()!r} needs a value; write key=value "
                                  f"(options: {', '.join(fields)})")
            key, raw = (t.strip() for t in item.split("=", 1))
            key = key.lower()
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise AblateError(f"task {name} has no option {key!r}{hint} (options: {', '.join(fields)})")
            if key in values:
                raise AblateError(f"task {name}: option {key!r} is given twice; give it once")
            values[key] = _convert(name, key, raw, fields[key])
    return cls(cls.Options(**values))


def _convert(task: str, key: str, raw: str, field: dataclasses.Field) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if kind == "bool":
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise AblateError(f"task {task}: {key}={raw!r} is not a boolean; write {key}=true or {key}=false")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise AblateError(f"task {task}: {key}={raw!r} is not an integer; write e.g. {key}=3") from None
    return raw


__all__ = [
    "ALPHABET",
    "END",
    "HELDOUT_MODULUS",
    "OP_NAMES",
    "PAD",
    "SPLIT_RULE",
    "TASKS",
    "TASK_PREFIX",
    "Problem",
    "Task",
    "TaskTokenizer",
    "is_heldout",
    "is_task_spec",
    "parse_task",
    "register_task",
    "split_hash",
    "task_names",
]
