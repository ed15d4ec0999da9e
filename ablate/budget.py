"""Budgets: what every variant in a comparison gets the same amount of.

``500steps``, ``2Mtokens``, ``1e14flops``, ``90s`` (also ``5min``, ``2h``). Step, token and FLOP
budgets fix the number of optimizer steps before training starts (a costlier variant gets fewer steps
under a FLOP budget); a time budget measures progress by training seconds, so the learning-rate
schedule, which follows progress, still ends where it should.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ablate.errors import AblateError

_UNITS = {"steps": "steps", "step": "steps", "tokens": "tokens", "tok": "tokens", "flops": "flops",
          "s": "seconds", "sec": "seconds", "min": "seconds", "h": "seconds"}
# the spelling a budget is kept under (its fairness key and part of a run's fingerprint): "30 step" and
# "30steps" are one budget
_CANONICAL = {"steps": "steps", "step": "steps", "tokens": "tokens", "tok": "tokens", "flops": "flops", "s": "s",
              "sec": "s", "min": "min", "h": "h"}
_SCALE = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}
# the largest budget that is a real plan (a year of seconds, 1e12 steps), not an overflow or a typo
_LARGEST = {"steps": 1e12, "tokens": 1e18, "flops": 1e30, "seconds": 3.2e7}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGBT]?)\s*(steps?|tokens|tok|flops|s|sec|min|h)\s*$")


@dataclass(frozen=True)
class Budget:
    kind: str  # steps | tokens | flops | seconds
    amount: float
    text: str

    def total_steps(self, tokens_per_step: int, flops_per_token: float) -> int | None:
        """Optimizer steps this budget allows, or None for a time budget (decided while training)."""
        if self.kind == "steps":
            return int(self.amount)
        if self.kind == "seconds":
            return None
        per_step = tokens_per_step if self.kind == "tokens" else flops_per_token * tokens_per_step
        steps = math.floor(self.amount / per_step)
        if steps < 1:  # one step anyway would give every variant the same step, whatever it costs
            unit = 10 ** max(0, math.floor(math.log10(per_step)) - 2)  # rounded up to 3 figures: enough for a step
            least = math.ceil(per_step / unit) * unit
            least = f"{least:.3g}" if least >= 1e6 else str(int(least))
            raise AblateError(f"budget {self.text} is less than one optimizer step of this run, which takes "
                              f"{per_step:.4g} {self.kind} (batch x accumulation x row tokens"
                              f"{' x FLOPs per token' if self.kind == 'flops' else ''}); give at least "
                              f"{least}{self.kind}, or a smaller --batch-size")
        return steps


def parse_budget(text: str) -> Budget:
    match = _PATTERN.match(str(text))
    if not match:
        raise AblateError(
            f"cannot read budget {text!r}; write a number and a unit: 500steps, 2Mtokens, 1e14flops, 90s, 5min"
        )
    number, scale, unit = float(match.group(1)), match.group(2), match.group(3)
    kind = _UNITS[unit]
    amount = number * _SCALE[scale] * {"min": 60, "h": 3600}.get(unit, 1)
    if not math.isfinite(amount) or amount > _LARGEST[kind]:
        raise AblateError(f"budget {text!r} is too large to run (at most {_LARGEST[kind]:.0e} {kind}); "
                          "give a finite amount, e.g. 500steps, 2Mtokens, 1e14flops or 90s")
    if amount <= 0:
        raise AblateError(f"budget {text!r} is empty; give a positive amount, e.g. 500steps")
    if kind == "steps" and amount < 1:
        raise AblateError(f"budget {text!r} is less than one step; give a whole number of steps, e.g. 500steps")
    if kind == "steps" and amount != int(amount):
        raise AblateError(f"budget {text!r}: steps must be a whole number")
    return Budget(kind, amount, f"{match.group(1)}{scale}{_CANONICAL[unit]}")


def canonical_budget(text: str) -> str:
    """``text`` in the spelling runs are keyed by (no spaces, one name per unit), or as given when it is
    not a budget (the error comes where the budget is used)."""
    try:
        return parse_budget(text).text
    except AblateError:
        return text
