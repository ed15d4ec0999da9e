"""Synthetic tasks (issue 11): masking, held-out split, scoring, determinism, conventions, parser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError
from ablate.slots import Dims
from ablate.tasks import (
    END,
    Problem,
    TaskBatches,
    encode_problems,
    eval_problem_sets,
    evaluate_task,
    greedy_complete,
    is_heldout,
    is_task_spec,
    parse_task,
    prepare_task,
    task_eval_batches,
    task_names,
)
from ablate.tasks.arithmetic import _max_len
from ablate.testing import tiny_model


def small_gpt(task, context=None, variant="baseline"):
    ctx = context or task.eval_context()
    return tiny_model(variant, Dims(32, 2, 4, ctx, task.tokenizer.vocab_size))


# ------------------------------------------------------------------------------------ masking
def test_targets_mask_prompt_and_padding_exactly():
    task = parse_task("calculator(digits=2,cot=true)")
    probs = task.sample(np.random.default_rng(0), 40)
    x, y = encode_problems(task, probs, task.train_context())
    tok = task.tokenizer
    for i, p in enumerate(probs):
        prompt, completion = task.render(p)
        ids = tok.encode(prompt + completion)
        t = len(ids) - 1
        assert x[i, :t].tolist() == ids[:-1] and (x[i, t:] == tok.pad).all()
        assert (y[i, : len(prompt) - 1] == -1).all()  # targets that are prompt tokens
        assert y[i, len(prompt) - 1 : t].tolist() == tok.encode(completion)  # trace + answer + end trained on
        assert (y[i, t:] == -1).all()  # padding


def test_prompt_positions_contribute_nothing_to_loss_or_gradient():
    task = parse_task("addition(digits=3)")
    model = small_gpt(task)
    model.train()
    x, y = TaskBatches(task, 16, seed=0).get(0)
    captured = {}

    def keep(_module, _inp, out):
        out.retain_grad()
        captured["logits"] = out

    handle = model.head.register_forward_hook(keep)
    logits, loss = model(x, y)
    loss.backward()
    handle.remove()
    grad = captured["logits"].grad
    masked = y == -1
    assert masked.any() and (~masked).any()
    assert grad[masked].abs().max().item() == 0.0  # no gradient at prompt or padding positions
    assert (grad[~masked].abs().sum(-1) > 0).all()  # every counted position has one
    # the loss is the mean over completion targets only ...
    manual = F.cross_entropy(logits.detach()[~masked].float(), y[~masked])
    assert torch.allclose(loss.detach(), manual, atol=1e-6)
    # ... so whatever stands at the prompt targets (here: the real next prompt tokens) changes nothing
    full = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
    for target_fill in (full, torch.randint(0, task.tokenizer.vocab_size, y.shape)):
        y2 = torch.where(masked, -1, y)
        assert torch.equal(y2, y)
        y_unmasked = torch.where(masked, target_fill, y)
        with torch.no_grad():
            _, loss_unmasked = model(x, y_unmasked)
        assert not torch.allclose(loss_unmasked, loss.detach())  # the mask is what keeps them out


# ------------------------------------------------------------------------------ held-out split
@pytest.mark.parametrize("spec", ["addition(digits=2)", "calculator(digits=2,cot=true)"])
def test_training_never_serves_heldout_problems(spec):
    task = parse_task(spec)
    batches = TaskBatches(task, 64, seed=1)
    served = set()
    for step in range(150):
        served.update(batches.problems(step))
    assert not any(is_heldout(p) for p in served)
    sets = eval_problem_sets(task, seed=0, n_id=300, n_per_length=100)
    for name, problems in sets.items():
        assert problems and all(is_heldout(p) for p in problems), name
        assert len(set(problems)) == len(problems)
        assert not served & set(problems)
    loss_batches = task_eval_batches(task, 32, 4)
    assert all(is_heldout(p) for p in loss_batches.problems)
    # the split keeps about one problem in ten out
    rng = np.random.default_rng(5)
    every = [Problem(int(a), "+", int(b)) for a, b in rng.integers(0, 1000, size=(4000, 2))]
    assert 0.08 < np.mean([is_heldout(p) for p in every]) < 0.12


def test_eval_sets_have_the_stated_lengths_and_are_the_same_for_every_run():
    task = parse_task("addition(digits=3)")
    sets = eval_problem_sets(task, seed=0, n_id=200, n_per_length=50)
    assert sorted(sets) == ["id", "len1", "len2", "len3", "len4", "len5", "len6"]
    for L in range(1, 7):
        assert all(p.length == L for p in sets[f"len{L}"])
    assert all(p.length <= 3 for p in sets["id"])
    a = prepare_task("addition(digits=3)", seed=1, batch_size=8, n_eval=200, n_per_length=50)
    b = prepare_task("addition(digits=3,reverse=false)", seed=2, batch_size=8, n_eval=200, n_per_length=50)
    assert a.eval_sets == b.eval_sets
    assert a.meta["problems_fingerprint"] == b.meta["problems_fingerprint"]
    assert a.meta["fingerprint"] != b.meta["fingerprint"]  # the answers are written differently
    c = prepare_task("addition(digits=3)", seed=7, batch_size=8, n_eval=200, n_per_length=50)
    assert c.meta["fingerprint"] == a.meta["fingerprint"]  # the training seed is not part of the data
    assert c.eval_batches.fingerprint == a.eval_batches.fingerprint


# ------------------------------------------------------------------------------------ scoring
def test_scorer_on_hand_made_answers_reversed_and_normal():
    rev, fwd = parse_task("addition(digits=3)"), parse_task("addition(digits=3,reverse=false)")
    p = Problem(123, "+", 45)  # 168
    assert rev.render(p) == ("123+45=", "861$") and fwd.render(p) == ("123+45=", "168$")
    assert rev.score(p, "861$") and fwd.score(p, "168$")
    assert rev.score(p, "861$5+")  # anything after the end token is ignored
    for wrong in ("168$", "861", "8610$", "86$", "0861$", "$", "", "8 61$"):
        assert not rev.score(p, wrong), wrong
    assert not fwd.score(p, "861$") and not fwd.score(p, "0168$")
    assert rev.read_answer("861$") == 168 and fwd.read_answer("168") == 168
    assert rev.read_answer("x1$") is None
    carry = Problem(999, "+", 1)
    assert rev.answer(carry) == "0001" and rev.read_answer("0001$") == 1000


def test_scorer_calculator_final_answer_only():
    calc = parse_task("calculator(digits=2,cot=true)")
    p = Problem(12, "*", 34)
    assert calc.render(p) == ("12*34=", "48+360=408>408$")
    assert calc.score(p, "48+360=408>408$")
    assert calc.score(p, "99+999=1>408$")  # a wrong trace does not count against a right answer
    assert not calc.score(p, "48+360=408>407$")
    assert not calc.score(p, "48+360=408$")  # without ">" the whole text is the answer
    d = Problem(17, "/", 5)
    assert calc.score(d, "1=0r1;17=3r2>3r2$") and not calc.score(d, "1=0r1;17=3r2>3r1$")
    assert calc.read_answer("1=0r1;17=3r2>3r2$") == (3, 2)


# --------------------------------------------------------------------------------- determinism
def test_batches_depend_only_on_seed_and_step():
    task = parse_task("calculator(digits=2)")
    a, b = TaskBatches(task, 32, seed=3), TaskBatches(task, 32, seed=3)
    forward = [a.get(s) for s in range(6)]
    backward = {s: b.get(s) for s in reversed(range(6))}
    for s in range(6):
        assert torch.equal(forward[s][0], backward[s][0]) and torch.equal(forward[s][1], backward[s][1])
    assert not torch.equal(a.get(0)[0], a.get(1)[0])
    assert not torch.equal(a.get(0)[0], TaskBatches(task, 32, seed=4).get(0)[0])
    # every format of the same problem space sees the same problems in the same order
    for other in ("calculator(digits=2,cot=true)", "calculator(digits=2,reverse=true)"):
        assert TaskBatches(parse_task(other), 32, seed=3).problems(5) == a.problems(5)
    # data-parallel ranks together see the single-process batch
    x, y = a.get(2)
    parts = [a.get(2, rank=r, world_size=4) for r in range(4)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


# -------------------------------------------------------------------------- calculator conventions
def test_calculator_conventions():
    calc = parse_task("calculator(ops=+-*/,digits=2)")
    assert calc.render(Problem(3, "-", 17)) == ("3-17=", "-14$")
    assert calc.render(Problem(17, "-", 3)) == ("17-3=", "14$")
    assert calc.render(Problem(17, "/", 5)) == ("17/5=", "3r2$")
    assert calc.render(Problem(3, "/", 17)) == ("3/17=", "0r3$")
    assert calc.render(Problem(99, "*", 99)) == ("99*99=", "9801$")
    assert calc.read_answer("-14$") == -14 and calc.read_answer("3r2") == (3, 2)
    rcalc = parse_task("calculator(digits=2,reverse=true)")
    assert rcalc.answer(Problem(3, "-", 17)) == "-41" and rcalc.read_answer("-41$") == -14
    assert rcalc.answer(Problem(125, "/", 7)) == "71r6" and rcalc.read_answer("71r6") == (17, 6)
    probs = calc.sample(np.random.default_rng(0), 4000)
    assert not [p for p in probs if p.op == "/" and p.b == 0]
    assert {p.op for p in probs} == set("+-*/")
    for p in probs:
        assert calc.read_answer(calc.render(p)[1]) == calc.value(p)
        q = calc.value(p)
        if p.op == "/":
            assert p.a == q[0] * p.b + q[1] and 0 <= q[1] < p.b
    only = parse_task("calculator(ops=×,digits=2)")
    assert only.spec == "calculator(ops=*,digits=2,cot=false,reverse=false)"
    assert {p.op for p in only.sample(np.random.default_rng(1), 200)} == {"*"}


def test_chain_of_thought_traces():
    calc = parse_task("calculator(digits=3,cot=true)")
    assert calc.render(Problem(123, "*", 456)) == ("123*456=", "738+6150=6888+49200=56088>56088$")
    assert calc.render(Problem(7, "*", 8)) == ("7*8=", "56>56$")
    assert calc.render(Problem(175, "/", 5)) == ("175/5=", "1=0r1;17=3r2;25=5r0>35r0$")
    assert calc.render(Problem(5, "/", 7)) == ("5/7=", "5=0r5>0r5$")
    assert calc.render(Problem(5, "+", 7)) == ("5+7=", "12$")  # no trace for + and -
    rcalc = parse_task("calculator(digits=3,cot=true,reverse=true)")
    assert rcalc.render(Problem(12, "*", 34)) == ("12*34=", "84+063=804>804$")
    # trace tokens are trained on: they are targets, not masked
    _, y = encode_problems(calc, [Problem(12, "*", 34)], calc.train_context())
    assert calc.tokenizer.decode([t for t in y[0].tolist() if t >= 0]) == "48+360=408>408$"


@pytest.mark.parametrize("spec", ["addition(digits=3)", "calculator(digits=2)", "calculator(digits=3,cot=true)"])
def test_max_len_bounds_every_problem(spec):
    task = parse_task(spec)
    rng = np.random.default_rng(0)
    for L in range(1, 2 * task.digits + 1):
        for p in task.sample(rng, 300, length=L):
            assert len(task.text(p)) <= _max_len(p.op, L, task.cot)
    nines = 10 ** task.digits - 1
    for op in task.ops:  # the bound is attained by the largest operands, except for division
        if op != "/":
            assert len(task.text(Problem(nines, op, nines if op != "-" else 0))) <= task.max_len(task.digits)
    assert len(task.text(Problem(nines, "+", nines))) == 3 * task.digits + 4 if "+" in task.ops else True
    with pytest.raises(AblateError, match="context"):
        TaskBatches(task, 4, seed=0, context=task.train_context() - 1)


# ------------------------------------------------------------------------------ decoding/accuracy
class Oracle(nn.Module):
    """Knows every answer; decodes through the same cache interface as GPT (``new_caches``)."""

    def __init__(self, task, wrong_ops=()):
        super().__init__()
        self.task, self.wrong_ops = task, set(wrong_ops)

    def new_caches(self, batch, max_len):
        return [[[] for _ in range(batch)]]

    def forward(self, idx, targets=None, caches=None):
        tok = self.task.tokenizer
        logits = torch.zeros(idx.shape[0], idx.shape[1], tok.vocab_size)
        for r, row in enumerate(idx.tolist()):
            caches[0][r].extend(row)
            text = tok.decode(caches[0][r])
            prompt, _, done = text.partition("=")
            op = next(c for c in prompt[1:] if c in "+-*/")
            a, b = prompt.split(op, 1) if prompt[0] != "-" else (None, None)
            completion = self.task.render(Problem(int(a), op, int(b)))[1]
            if op in self.wrong_ops:
                completion = completion[:-1] + "1" + END  # a wrong final answer after a right trace
            nxt = completion[len(done)] if len(done) < len(completion) else END
            logits[r, -1, tok.stoi[nxt]] = 1.0
        return logits, None


def test_accuracy_metrics_with_an_oracle():
    task = parse_task("calculator(digits=2,cot=true)")
    sets = eval_problem_sets(task, n_id=120, n_per_length=30)
    res = evaluate_task(Oracle(task), task, sets=sets)
    assert res.metrics["acc"] == 1.0 and res.metrics["acc_len4"] == 1.0 and res.metrics["acc_longer"] == 1.0
    assert {"acc_op_add", "acc_op_sub", "acc_op_mul", "acc_op_div"} <= set(res.metrics)
    assert not res.skipped
    res = evaluate_task(Oracle(task, wrong_ops="*"), task, sets=sets)
    assert res.metrics["acc_op_mul"] == 0.0 and res.metrics["acc_op_add"] == 1.0
    assert 0.5 < res.metrics["acc"] < 1.0
    assert set(parse_task("addition(digits=2)").eval_lengths()) == {1, 2, 3, 4}


@torch.no_grad()
def test_greedy_decoding_with_kv_cache_matches_full_forward():
    task = parse_task("addition(digits=2)")
    model = small_gpt(task, variant="rope")
    probs = [p for p in eval_problem_sets(task, n_id=60, n_per_length=5)["id"] if len(task.render(p)[0]) == 6]
    prompts = [task.render(p)[0] for p in probs][:8]
    got = greedy_complete(model, task, prompts, max_new=5)
    idx = torch.tensor([task.tokenizer.encode(p) for p in prompts])
    for _ in range(5):  # plain argmax over the whole sequence each step
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    for text, row in zip(got, idx[:, 6:].tolist()):
        full = task.tokenizer.decode(row)
        assert full.startswith(text) and (text.endswith(END) or len(text) == 5)


def test_learned_positions_too_short_are_skipped_with_a_reason():
    task = parse_task("addition(digits=2)")
    model = small_gpt(task, context=task.train_context())  # learned table covers training lengths only
    sets = eval_problem_sets(task, n_id=40, n_per_length=10)
    res = evaluate_task(model, task, sets=sets)
    assert "acc" in res.metrics and "acc_len2" in res.metrics
    assert "len4" in res.skipped and "positions and the context is" in res.skipped["len4"]
    assert "acc_len4" not in res.metrics
    rope = small_gpt(task, context=task.train_context(), variant="rope")  # no table: answers would be cut off
    res = evaluate_task(rope, task, sets=sets)
    assert "len4" in res.skipped and "acc_len4" not in res.metrics and "acc_len2" in res.metrics
    assert "acc_longer" not in res.metrics or all(int(k[7:]) <= 3 for k in res.metrics if k.startswith("acc_len"))
    data = prepare_task(task, seed=0, batch_size=4, n_eval=40, n_per_length=10)
    assert data.context == task.eval_context() > data.train_context
    assert data.train_batches.get(0)[0].shape == (4, data.train_context)
    big = small_gpt(task, context=data.context)
    assert set(data.accuracy(big)) >= {"acc", "acc_len1", "acc_len4", "acc_longer"}


# ------------------------------------------------------------------------------------ parser
def test_parser_accepts_specs():
    assert parse_task("addition(digits=3)").spec == "addition(digits=3,reverse=true)"
    assert parse_task("task:addition( digits = 4 , reverse=false )").spec == "addition(digits=4,reverse=false)"
    assert parse_task("addition").digits == 3
    c = parse_task("calculator(ops=+-*/,digits=2,cot=true)")
    assert c.ops == ("+", "-", "*", "/") and c.cot and not c.reverse
    assert parse_task("calculator(ops=/*)").spec.startswith("calculator(ops=*/,")
    assert parse_task(c.spec) == c
    assert is_task_spec("task:addition") and not is_task_spec("tinyshakespeare")
    assert set(task_names()) >= {"addition", "calculator"}


@pytest.mark.parametrize("spec, words", [
    ("additon(digits=3)", ["unknown task", "did you mean addition"]),
    ("addition(digit=3)", ["no option 'digit'", "did you mean digits"]),
    ("addition(digits=three)", ["not an integer", "digits=3"]),
    ("addition(digits=0)", ["out of range", "1 <= digits"]),
    ("addition(digits=10)", ["out of range"]),
    ("addition(reverse=maybe)", ["not a boolean", "reverse=true"]),
    ("addition(digits=3,digits=2)", ["given twice"]),
    ("addition(digits)", ["needs a value", "key=value"]),
    ("addition(digits=3", ["cannot read task"]),
    ("calculator(ops=+%)", ["unknown operators", "choose from"]),
    ("calculator(ops=)", ["empty"]),
])
def test_parser_errors_are_one_line_and_name_the_fix(spec, words):
    with pytest.raises(AblateError) as info:
        parse_task(spec)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_unknown_characters_in_a_problem_are_a_user_error():
    task = parse_task("addition")
    with pytest.raises(AblateError, match="no token"):
        task.tokenizer.encode("12 + 3=")


@pytest.mark.parametrize("spec,prompt,words", [
    ("calculator", "17/0=", "divides by zero"),
    ("calculator(ops=+-)", "17*3=", "never shown '*'"),
    ("addition", "12 + 3 = 4", "not a problem of addition"),
    ("addition", "1e3+2=", "not a problem"),
    ("addition", "=", "not a problem"),
])
def test_a_typed_problem_the_task_never_asks_is_a_user_error(spec, prompt, words):
    with pytest.raises(AblateError, match=words) as err:
        parse_task(spec).read_problem(prompt)
    assert "\n" not in str(err.value) and "--prompt" in str(err.value)


def test_a_typed_problem_reads_as_training_writes_it():
    task = parse_task("calculator(reverse=true)")
    for typed, problem in (("17/5=", Problem(17, "/", 5)), (" 007*3 ", Problem(7, "*", 3)), ("0-12", Problem(0, "-", 12)),
                          ("12×3=", Problem(12, "*", 3)), ("17÷5", Problem(17, "/", 5)), ("9−4=", Problem(9, "-", 4))):
        assert task.read_problem(typed) == problem
    assert task.render(task.read_problem("007*3"))[0] == "7*3="
