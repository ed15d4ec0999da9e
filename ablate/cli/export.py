"""`ablate export RUN --to hf DIR`: a run's model as a Hugging Face `transformers` model (docs/export.md)."""

from __future__ import annotations

from ablate.cli.console import console
from ablate.errors import AblateError


def cmd_export(args) -> int:
    from ablate.cli.run import _run_dir
    from ablate.export import check_folder, export_run

    check_folder(args.dir, args.force)  # before an MLflow run id is looked up or a checkpoint read
    try:
        run_dir = _run_dir(args)  # a run directory, or an MLflow run id (as `ablate sample --run`)
    except AblateError as err:
        raise AblateError(str(err).replace("--run ", "export ", 1)) from None
    done = export_run(run_dir, args.dir, force=args.force)
    folder = str(done.folder)
    lines = [f"exported {done.variant} as {done.hf_class} ({done.params:,} parameters) to {folder}",
             f"  files: {', '.join(done.files)}",
             f"  logits: max |difference| from ablate's {done.max_logit_gap:.1e} (float32, CPU)",
             f"  load: AutoModelForCausalLM.from_pretrained({folder!r})"
             + (f", AutoTokenizer.from_pretrained({folder!r})" if done.tokenizer_saved else
                "; tokenize with ablate (this tokenizer has no exact Hugging Face form; see README.md there)")]
    if done.run_status and done.run_status != "finished":  # the model card says so too
        at = f" at step {done.run_steps}" if done.run_steps is not None else ""
        if done.run_status in ("interrupted", "unfinished"):
            how = "was interrupted" if done.run_status == "interrupted" else "has not finished (killed, or still training)"
            lines.append(f"note: the run {how}{at}, before the end of its budget, and this export holds "
                         "those weights; finish it with the same `ablate run` command and --resume, then export again "
                         "with --force")
        else:
            lines.append(f"note: the run ended {done.run_status}{at}; this export holds its last checkpoint's weights")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="write a run's model as a Hugging Face transformers model (GPT-2, LLaMA, Mistral)")
    p.add_argument("run", metavar="RUN", help="run directory (printed by `ablate run`) or its MLflow run id")
    p.add_argument("--to", required=True, choices=["hf"], help="the format: hf (transformers: config.json + "
                                                               "model.safetensors; needs the extra ablate[hf])")
    p.add_argument("dir", metavar="DIR", help="folder to write (new or empty; see --force)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, replacing the files an export writes")
    p.add_argument("--tracking-uri", default=None, help="where to look an MLflow run id up (default $MLFLOW_TRACKING_URI "
                                                        "or sqlite:///mlflow.db)")
    p.set_defaults(func=cmd_export)
