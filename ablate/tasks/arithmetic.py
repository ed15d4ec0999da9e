"""The built-in tasks: ``addition`` and ``calculator``.

Conventions (ASCII operators: ``*`` for ×, ``/`` for ÷, ``-`` for −):

- Operands are non-negative integers written in normal order without leading zeros: ``123+45=``.
- A result is written with its digits least-significant first when ``reverse=true`` (the carry then
  flows the way the model writes: ``123+45=`` → ``861$`` for 168), in normal order otherwise.
- Negative results (subtraction only) carry a leading ``-`` sign, before the (possibly reversed)
  digits: ``3-17=-14`` (reversed: ``-41``).
- Division gives the integer quotient and remainder, ``a = q·b + r`` with ``0 ≤ r < b``, written
  ``q r r``: ``17/5=3r2``. The divisor is never 0 (such problems are never drawn).
- ``$`` ends every answer; ``_`` pads.

Chain-of-thought traces (``calculator(cot=true)``) sit between the prompt and the final answer,
which follows a ``>``. They are trained on like the answer, but only the final answer is scored.

- ``×``: one step per digit of ``b``, least significant first: its partial product
  ``a·dᵢ·10ⁱ``, then from the second step on ``+p=s`` with ``s`` the running sum:
  ``12*34=48+360=408>408$``.
- ``÷``: long division, one step per digit of ``a``: ``cur=qᵢrrem`` with ``cur`` the part of ``a``
  brought down so far (the previous remainder ×10 plus the next digit), ``qᵢ`` the quotient digit and
  ``rem`` what is left; steps joined by ``;``: ``175/5=1=0r1;17=3r2;25=5r0>35r0$``.
- ``+`` and ``−`` have no trace: their answer follows ``=`` directly.

Numbers inside the trace are reversed too when ``reverse=true``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ablate.errors import AblateError
from ablate.tasks.base import END, Problem, Task, is_heldout, register_task

MAX_DIGITS = 9  # evaluation at 2·digits keeps every operand below 10^18 (int64 sampling)
_CANON_OPS = "+-*/"
_OP_ALIASES = {"×": "*", "x": "*", "÷": "/", "−": "-", ":": "/"}


def _sample(task: Task, rng: np.random.Generator, n: int, split: str, length: int | None) -> list[Problem]:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if n < 0:
        raise ValueError("n must be non-negative")
    ops = task.ops
    out: list[Problem] = []
    for _ in range(10_000):
        if len(out) >= n:
            break
        m = max(16, 2 * (n - len(out)) if split == "train" else 12 * (n - len(out)))
        op_idx = rng.integers(0, len(ops), size=m)
        if length is None:
            la = rng.integers(1, task.digits + 1, size=m)
            lb = rng.integers(1, task.digits + 1, size=m)
        else:
            other = rng.integers(1, length + 1, size=m)
            first_long = rng.integers(0, 2, size=m).astype(bool)
            la = np.where(first_long, length, other)
            lb = np.where(first_long, other, length)
        a = _values(rng, la)
        b = _values(rng, lb)
        for i in range(m):
            p = Problem(int(a[i]), ops[int(op_idx[i])], int(b[i]))
            if p.op == "/" and p.b == 0:
                continue
            if is_heldout(p) != (split == "heldout"):
                continue
            out.append(p)
            if len(out) == n:
                break
    if len(out) < n:  # pragma: no cover - needs a problem space with no held-out member
        raise AblateError(f"task {task.spec}: could not draw {n} {split} problems; use more digits")
    return out


def _values(rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
    """A value with exactly ``L`` digits for each L (0..9 for one digit)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    lo = np.where(lengths == 1, 0, 10 ** (lengths - 1))
    hi = 10 ** lengths
    return rng.integers(lo, hi)


class ArithmeticTask(Task):
    """Shared writing and reading of two-operand integer problems."""

    @property
    def digits(self) -> int:
        return self.options.digits

    @property
    def reverse(self) -> bool:
        return self.options.reverse

    @property
    def cot(self) -> bool:
        return getattr(self.options, "cot", False)

    def validate(self) -> None:
        d = self.options.digits
        if not 1 <= d <= MAX_DIGITS:
            raise AblateError(f"task {self.name}: digits={d} is out of range; use 1 <= digits <= {MAX_DIGITS}")

    def sample(self, rng, n, *, split="train", length=None):
        if length is not None and not 1 <= length <= 2 * MAX_DIGITS:
            raise ValueError(f"length must be in 1..{2 * MAX_DIGITS}")
        return _sample(self, rng, n, split, length)

    # -------------------------------------------------------------- writing numbers
    def num(self, v: int) -> str:
        digits = str(abs(v))
        if self.reverse:
            digits = digits[::-1]
        return ("-" if v < 0 else "") + digits

    def read_num(self, text: str) -> int | None:
        neg = text.startswith("-")
        digits = text[1:] if neg else text
        if not digits or not digits.isdigit() or not digits.isascii():
            return None
        if self.reverse:
            digits = digits[::-1]
        return -int(digits) if neg else int(digits)

    # -------------------------------------------------------------- problems
    def answer(self, p: Problem) -> str:
        if p.op == "+":
            return self.num(p.a + p.b)
        if p.op == "-":
            return self.num(p.a - p.b)
        if p.op == "*":
            return self.num(p.a * p.b)
        if p.op == "/":
            q, r = divmod(p.a, p.b)
            return f"{self.num(q)}r{self.num(r)}"
        raise ValueError(f"unknown operator {p.op!r}")

    def value(self, p: Problem):
        """The true result: an int, or (quotient, remainder) for division."""
        return {"+": lambda: p.a + p.b, "-": lambda: p.a - p.b, "*": lambda: p.a * p.b,
                "/": lambda: divmod(p.a, p.b)}[p.op]()

    def read_answer(self, text: str):
        """``"861"`` → 168 (reversed), ``"3r2"`` → (3, 2), anything malformed → None. Accepts a whole
        generated completion too (stops at the end token, skips a trace)."""
        if text is None:
            return None
        if END in text or ">" in text:
            text = text.split(END, 1)[0].rsplit(">", 1)[-1]
        if "r" in text:
            q, _, r = text.partition("r")
            q, r = self.read_num(q), self.read_num(r)
            return None if q is None or r is None else (q, r)
        return self.read_num(text)

    def trace(self, p: Problem) -> str:
        if not self.cot:
            return ""
        if p.op == "*":
            steps, total = [], 0
            for i, d in enumerate(reversed(str(p.b))):
                part = p.a * int(d) * 10 ** i
                total += part
                steps.append(self.num(part) if i == 0 else f"+{self.num(part)}={self.num(total)}")
            return "".join(steps)
        if p.op == "/":
            steps, rem = [], 0
            for d in str(p.a):
                cur = rem * 10 + int(d)
                q, rem = divmod(cur, p.b)
                steps.append(f"{self.num(cur)}={q}r{self.num(rem)}")
            return ";".join(steps)
        return ""

    def render(self, p: Problem) -> tuple[str, str]:
        t = self.trace(p)
        return f"{p.a}{p.op}{p.b}=", (t + ">" if t else "") + self.answer(p) + END

    def max_len(self, digits: int) -> int:
        return max(_max_len(op, digits, self.cot) for op in self.ops)


def _max_len(op: str, n: int, cot: bool) -> int:
    """Upper bound on prompt + completion tokens for operands of <= n digits (tested)."""
    prompt = 2 * n + 2  # a op b =
    if op in "+-":
        return prompt + (n + 1) + 1  # n+1 digits (or sign + n digits), end
    if op == "*":
        total = prompt + 2 * n + 1
        if cot:  # first partial, then "+p=s" per further digit of b, then ">"
            total += 2 * n + (n - 1) * (4 * n + 2) + 1
        return total
    if op == "/":
        total = prompt + (2 * n + 1) + 1  # q r rem, end
        if cot:  # per digit of a: cur(<=n) = q(1) r rem(<=n); ";" between; ">"
            total += n * (2 * n + 3) + (n - 1) + 1
        return total
    raise ValueError(op)


@register_task("addition")
class Addition(ArithmeticTask):
    """a+b=c with operands of 1..digits digits; c written least-significant digit first by default."""

    summary = "a+b with 1..digits-digit operands; the sum reversed by default (reverse=false for normal order)"

    @dataclass(frozen=True)
    class Options:
        digits: int = 3
        reverse: bool = True

    @property
    def ops(self) -> tuple[str, ...]:
        return ("+",)


@register_task("calculator")
class Calculator(ArithmeticTask):
    """+ − × ÷ on 1..digits-digit operands, mixed uniformly over ``ops``; see the module docstring."""

    summary = ("+ - * / (ops=...), negative results with a leading -, division as quotient r remainder; "
               "cot=true adds partial-product / long-division traces")

    @dataclass(frozen=True)
    class Options:
        ops: str = "+-*/"
        digits: int = 2
        cot: bool = False
        reverse: bool = False

    def __init__(self, options) -> None:
        raw = options.ops
        mapped = "".join(_OP_ALIASES.get(c, c) for c in raw.replace(" ", ""))
        bad = sorted(set(mapped) - set(_CANON_OPS))
        if bad or not mapped:
            what = f"has unknown operators {''.join(bad)!r}" if bad else "is empty"
            raise AblateError(f"task calculator: ops={raw!r} {what}; choose from + - * / (e.g. ops=+-*/ or ops=*)")
        canon = "".join(c for c in _CANON_OPS if c in mapped)
        super().__init__(type(options)(ops=canon, digits=options.digits, cot=options.cot, reverse=options.reverse))

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.options.ops)


__all__ = ["MAX_DIGITS", "Addition", "ArithmeticTask", "Calculator"]
