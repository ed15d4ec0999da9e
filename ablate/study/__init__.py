"""Studies: declarative ablation studies (``studies/*.toml``) executed by Optuna, tracked in MLflow.

A study file names what is compared (variants and/or a space over slots and hyperparameters), on what
(data, tokenizer, size, budget), how often (seeds) and how (the protocol)::

    name = "positions"                 # Optuna study / MLflow parent run (default: the file's stem)
    protocol = "compare"               # compare | search | tune-then-compare | pretrain-then-finetune
    data = "shakespeare"               # any RunConfig data key at the top level:
    tokenizer = "char"                 #   data, data_file, tokenizer, size, d_model, n_layers,
    size = "cpu"                       #   n_heads, context, budget
    budget = "600steps"
    seeds = 3                          # a count (seeds 0..n-1) or a list, e.g. [0, 1, 2]
    metric = "val_loss"                # val_loss | val_bpb (lower is better) | acc, acc_longer, … (tasks; higher)
    baseline = "baseline"              # a variant string; must be among the compared variants
    variants = ["baseline", "rope", "alibi"]

    [train]                            # any other RunConfig setting (batch_size, lr, eval_points, ...)
    batch_size = 12

    [search]                           # slots: lists of components; hyperparameters: lists or ranges
    mlp = ["gelu", "swiglu"]           #   compare: the variants x the slot lists (a full factorial)
    lr = {low = 1e-4, high = 3e-3, log = true}   # search only; also trials, sampler, pruner, seed

    [tune]                             # tune-then-compare: the per-variant lr search
    lr = [1e-3, 2e-3, 4e-3]            #   a grid, or {low, high, log} with trials = N (TPE)

    [gpu]                              # RunConfig overrides applied with `ablate study run --gpu`
    size = "shakespeare-char"

Every key is checked: an unknown key or a bad value is an error naming the key and the file.

Protocols:

- ``compare``: every variant x every seed, exactly once, through Optuna's GridSampler; no pruning.
- ``search``: a sampler (TPE by default) over the space, one seed per trial, pruning on the
  intermediate validation loss (median or successive halving).
- ``tune-then-compare``: a short learning-rate search per variant (on a seed of its own), then every
  variant x every seed at that variant's best learning rate, then the comparison.
- ``pretrain-then-finetune``: a ``[pretrain]`` table (stage 1's data, budget, lr, decontaminate ...) and
  an optional ``[finetune]`` table (the initialised arm's optimizer); stage 1 pretrains each variant
  (Optuna study ``<name>:pretrain``), stage 2 trains scratch, pretrained and scratch-total (pretraining
  + finetune tokens) arms per seed; see :mod:`ablate.study.pretrain`.

Execution: the study is created once (Optuna studies, the MLflow parent run, the queue of grid
trials) before any worker starts; workers then pop trials from Optuna's storage, which is the only
queue. A trial records its worker (host, boot id, pid, process start time) and, where the storage
has no heartbeat of its own (journal files), a heartbeat; a RUNNING trial whose worker is gone (same
host) or silent for longer than the grace period (any host) is marked FAIL, its MLflow run FAILED,
and its (variant, seed) queued again. Before training, a worker checks that no other trial holds the
same (variant, seed), so a key is trained once even when two processes queue it at the same time.

A trial's Optuna params are what its stage compares or searches (the variant; the arm; a tuning grid's
lr and warmup); the seed, a replicate, is a user attribute (``seed``), as is the lr a compare stage
takes over from tuning. Optuna's parameter importances, its best trial and optuna-dashboard therefore
speak of the settings, and every study names its objective after the metric (``set_metric_names``).
"""

from ablate.study.context import Context, WorkSummary
from ablate.study.create import create, preflight
from ablate.study.keys import K_BEAT, K_FAILURE, K_RUN, K_SKIP, K_WORKER, MAX_RETRY
from ablate.study.progress import best_lrs, compare_trials, progress, tuning_table
from ablate.study.queue import COMPARE_KEY, TUNE_KEY, compare_points, tune_points
from ablate.study.spec import StudySpec, load_study, parse_set
from ablate.study.storage import open_storage, storage_url
from ablate.study.work import work
from ablate.study.workers import reap, worker_identity

__all__ = [
    "COMPARE_KEY", "TUNE_KEY", "K_BEAT", "K_FAILURE", "K_RUN", "K_SKIP", "K_WORKER", "MAX_RETRY",
    "Context", "StudySpec", "WorkSummary", "best_lrs", "compare_points", "compare_trials", "create",
    "load_study", "open_storage", "parse_set", "preflight", "progress", "reap", "storage_url", "tune_points",
    "tuning_table", "work", "worker_identity",
]
