"""`make train CONFIG=...`: preflight, then SFT of PaddleOCR-VL with the recipe's trainer
(ERNIEKit, PaddleFormers or transformers: training/trainers/).

    python -m training.train --config configs/train/cpu_tiny.yaml [--dry-run] [--resume] \\
        [key=value ...]

--dry-run prints the resolved recipe, the preflight findings, the generated tool
config and the exact command, and exits 0 unless the recipe itself is invalid (2: an
unknown key names the nearest valid one, a value of the wrong type says so).
A real run refuses to start on any preflight error (exit 1), streams the tool's log
(also to run_dir/train.log), stops cleanly on Ctrl-C (exit 130) and, with --resume,
continues from the newest checkpoint-N. See docs/training.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from training.launch import plan_launch, run, write_launch_files, write_run_record
from training.preflight import checkpoints, run_preflight
from training.recipe import Recipe, RecipeError, load_recipe, render_tool_config

log = logging.getLogger("training.train")


def prepare_actions(recipe: Recipe) -> list[str]:
    """What `prepare:` would build (only what is missing)."""
    from training.tiny_data import TinyDataSpec, is_tiny_dataset
    from training.tiny_model import is_tiny_model

    actions = []
    prep = recipe.prepare
    if prep.get("tiny_model") and not is_tiny_model(recipe.model_dir):
        actions.append(f"build the tiny PaddleOCR-VL model at {recipe.model_dir}")
    if "dataset" in prep:
        spec_args = dict(prep["dataset"])
        root = Path(spec_args.pop("dir"))
        spec = TinyDataSpec(**spec_args)
        if not is_tiny_dataset(root, spec):
            actions.append(
                f"build a synthetic invoice SFT dataset at {root}/sft ({spec.invoices} invoices)"
            )
    return actions


def prepare(recipe: Recipe) -> None:
    """Build the tiny model and the synthetic dataset when the recipe asks and they are absent."""
    from training.tiny_data import TinyDataSpec, build_tiny_dataset
    from training.tiny_model import build_tiny_model

    prep = recipe.prepare
    if prep.get("tiny_model"):
        build_tiny_model(recipe.model_dir, seed=int(prep.get("seed", 0)))
    if "dataset" in prep:
        spec_args = dict(prep["dataset"])
        root = Path(spec_args.pop("dir"))
        build_tiny_dataset(root, TinyDataSpec(**spec_args))


def _section(title: str) -> str:
    return f"\n== {title}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Preflight and launch SFT of PaddleOCR-VL (ERNIEKit, PaddleFormers or transformers) from a recipe.",
    )
    parser.add_argument("--config", required=True, type=Path, help="recipe in configs/train/")
    parser.add_argument(
        "--dry-run", action="store_true", help="print config, findings, command; run nothing"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint-N"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="override a variable or config key"
    )
    args = parser.parse_intermixed_args(argv)  # key=value before or after the flags
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        recipe = load_recipe(args.config, args.overrides)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out = sys.stdout
    if args.dry_run:
        actions = prepare_actions(recipe)
    else:
        actions = []
        try:
            prepare(recipe)
        except Exception as e:  # the tiny model / dataset builders name what failed
            print(f"error: prepare failed: {e}", file=sys.stderr)
            return 1

    result = run_preflight(recipe, resume=args.resume)
    resume_from = checkpoints(recipe.output_dir)[-1] if args.resume and result.ok else None
    plan = plan_launch(recipe, max_steps=result.max_steps, resume_from=resume_from)

    if args.dry_run:
        out.write(_section(f"recipe {recipe.path} (resolved)"))
        out.write(yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))
        if actions:
            out.write(_section("prepare (a real run builds these first)"))
            out.write("".join(f"- {a}\n" for a in actions))
        out.write(_section("preflight"))
        out.write("".join(f"{f}\n" for f in result.findings))
        out.write(_section(f"{recipe.launcher} config -> {plan.config_path}"))
        out.write(render_tool_config(plan.tool_config))
        out.write(_section("command"))
        out.write(f"cd {plan.cwd}\n{plan.shell()}\n")
        for note in plan.notes:
            out.write(f"note: {note}\n")
        return 0

    for f in result.findings:
        (log.error if f.level == "error" else log.info)("%s", f)
    if not result.ok:
        print(
            f"error: {len(result.errors)} preflight check(s) failed; nothing was started "
            f"(python -m training.train --config {args.config} --dry-run shows the plan)",
            file=sys.stderr,
        )
        return 1

    write_launch_files(plan)
    record: dict[str, Any] = {
        "recipe": recipe.to_dict(),
        "tool_config": str(plan.config_path),
        "command": plan.shell(),
        "cwd": str(plan.cwd),
        "resume_from": str(resume_from) if resume_from else None,
        "preflight": [f.to_dict() for f in result.findings],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "status": "running",
    }
    write_run_record(plan, record)
    t0 = time.monotonic()
    rc = run(plan)
    record.update(
        exit_code=rc,
        wall_s=round(time.monotonic() - t0, 1),
        status={0: "finished", 130: "interrupted"}.get(rc, "failed"),
        checkpoints=[str(p) for p in checkpoints(recipe.output_dir)],
    )
    write_run_record(plan, record)
    if rc == 0:
        print(
            f"\ntraining finished in {record['wall_s']} s; next:\n"
            f"  python -m training.summary {recipe.run_dir}\n"
            f"  python -m training.export --ckpt {recipe.output_dir} --base-model {recipe.model_dir} "
            f"--out {recipe.run_dir / 'model'}"
        )
    elif rc == 130:
        print(f"\nstopped; continue with: python -m training.train --config {args.config} --resume")
    else:
        print(f"\nerror: training exited with {rc}; see {plan.log_path}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
