"""Teach a tiny GPT 3-digit addition on the CPU (issue 11's "a run that learns 3-digit addition").

A minimal loop (AdamW, warmup + cosine) over ``ablate.tasks``; it does not use ``ablate/train.py``.
Prints the held-out in-distribution exact-match accuracy, accuracy per operand length (4..6 digits
are never trained on) and the wall time.

    .venv/bin/python benchmarks/addition_demo.py                       # learned positions (baseline)
    .venv/bin/python benchmarks/addition_demo.py --variant rope --steps 3000
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ablate.model import build_model
from ablate.slots import Dims
from ablate.tasks import prepare_task
from ablate.variant import parse_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="addition(digits=3)")
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=1000)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    data = prepare_task(args.task, seed=args.seed, batch_size=args.batch_size)
    variant = parse_variant(args.variant)
    dims = Dims(args.d_model, args.layers, args.heads, data.context, data.vocab_size,
                bias=variant.model.bias, dropout=0.0)
    model = build_model(variant, dims)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"task {data.task.spec}: vocab {data.vocab_size}, train width {data.train_context}, "
          f"model context {data.context} (covers eval up to {2 * data.task.digits} digits)")
    print(f"model {variant.name} {args.d_model}x{args.layers}x{args.heads}, {n_params / 1e6:.2f}M params; "
          f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}, {args.threads} threads")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    train_seconds = 0.0
    recent = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = data.train_batches.get(step)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_seconds += time.perf_counter() - t0
        recent.append(loss.item())
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            acc = data.accuracy(model)["acc"]
            print(f"step {step + 1:5d}  loss {sum(recent) / len(recent):.4f}  held-out acc {acc:.3f}  "
                  f"train {train_seconds:.0f}s", flush=True)
            recent = []

    t_eval = time.perf_counter()
    result = data.evaluate(model)
    eval_seconds = time.perf_counter() - t_eval
    m = result.metrics
    print(f"final loss {sum(recent) / max(1, len(recent)):.4f}")
    print(f"in-distribution exact match (held-out, {data.meta['eval_sizes']['id']} problems): {m['acc']:.4f}")
    for L in data.meta["eval_lengths"]:
        tag = "trained" if L <= data.task.digits else "longer"
        if f"acc_len{L}" in m:
            print(f"  acc_len{L} ({tag}, {data.meta['eval_sizes'][f'len{L}']} problems): {m[f'acc_len{L}']:.4f}")
        else:
            print(f"  acc_len{L} ({tag}): skipped: {result.skipped.get(f'len{L}')}")
    for prompt, out, ok in result.examples.get("len3", []):
        print(f"  example {prompt}{out}  -> {data.task.read_answer(out)} {'ok' if ok else 'WRONG'}")
    print(f"wall time: {time.perf_counter() - t_start:.1f}s total, {train_seconds:.1f}s training "
          f"({args.steps / train_seconds:.0f} steps/s), {eval_seconds:.1f}s final evaluation")


if __name__ == "__main__":
    main()
