"""Turn a resolved recipe into the tool's config file and command, and run it.

Routes (each a trainer in training/trainers/, which builds its own command):
  erniekit        `erniekit train CFG` (ERNIEKit's launcher wraps paddle.distributed.launch)
  paddleformers   gpu: `paddleformers-cli train CFG`; cpu: PaddleFormers' cli/launcher.py
                  run in this Python (`python -m training.pf_compat train CFG`)
  transformers    `python -m training.torch_sft CFG` (torchrun for several GPUs)
The tool's executable is looked up beside the Python running training (TRAIN_PY), then on PATH.

Files of a run (`run_dir` = the recipe's run_dir variable):
  run_dir/launch/<launcher>_config.yaml   the exact config the tool reads
  run_dir/launch/command.sh               the exact command, re-runnable by hand
  run_dir/launch/run.json                 recipe, overrides, preflight, exit status
  run_dir/train.log                       the tool's output (also streamed to the terminal)
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from data_tools.jsonl import atomic_write_text
from training.recipe import Recipe, render_tool_config

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 30.0


@dataclass
class LaunchPlan:
    tool_config: dict[str, Any]
    config_path: Path
    command: list[str]
    env: dict[str, str]
    log_path: Path
    run_json: Path
    cwd: Path
    notes: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The command as one shell line, environment first."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        cmd = " ".join(shlex.quote(c) for c in self.command)
        return f"{env} {cmd}".strip()


def tool_config(
    recipe: Recipe, *, max_steps: int | None = None, resume_from: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The recipe's config plus overrides, with max_steps=auto and --resume resolved."""
    config = copy.deepcopy(recipe.trainer.tool_config(recipe))
    notes = []
    if config.get("max_steps") == "auto":
        if max_steps is not None:
            config["max_steps"] = max_steps
        else:
            notes.append("max_steps stays 'auto' until the dataset exists (computed at launch)")
    if resume_from is not None:
        config["resume_from_checkpoint"] = str(resume_from)
    return config, notes


def plan_launch(
    recipe: Recipe,
    *,
    max_steps: int | None = None,
    resume_from: Path | None = None,
    python: str = sys.executable,
) -> LaunchPlan:
    config, notes = tool_config(recipe, max_steps=max_steps, resume_from=resume_from)
    run_dir = recipe.run_dir
    config_path = run_dir / "launch" / f"{recipe.launcher}_config.yaml"
    command, env = recipe.trainer.command(recipe, config_path, python)
    return LaunchPlan(
        tool_config=config,
        config_path=config_path,
        command=command,
        env=env,
        log_path=run_dir / "train.log",
        run_json=run_dir / "launch" / "run.json",
        cwd=run_dir,
        notes=notes,
    )


def write_launch_files(plan: LaunchPlan) -> None:
    plan.config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.config_path, render_tool_config(plan.tool_config))
    script = f"#!/usr/bin/env bash\n# written by python -m training.train\ncd {shlex.quote(str(plan.cwd))}\n{plan.shell()}\n"
    atomic_write_text(plan.config_path.parent / "command.sh", script)


def write_run_record(plan: LaunchPlan, record: dict[str, Any]) -> None:
    atomic_write_text(plan.run_json, json.dumps(record, ensure_ascii=False, indent=2) + "\n")


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT to the tool's process group, then SIGTERM, then SIGKILL."""
    for sig, wait_s in (
        (signal.SIGINT, STOP_GRACE_S),
        (signal.SIGTERM, 10.0),
        (signal.SIGKILL, 5.0),
    ):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            log.warning("training did not stop after %s; escalating", signal.Signals(sig).name)


def run(plan: LaunchPlan, *, echo: TextIO | None = None) -> int:
    """Run the tool, streaming its output to `echo` and to train.log; returns its exit code.

    Ctrl-C stops the tool's whole process group (SIGINT, then SIGTERM/SIGKILL if it
    hangs) and returns 130; checkpoints written so far stay and `--resume` continues.
    """
    echo = echo if echo is not None else sys.stdout
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **plan.env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log.info("running: %s", plan.shell())
    with plan.log_path.open("a", encoding="utf-8") as logf:
        logf.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {plan.shell()}\n")
        proc = subprocess.Popen(
            plan.command,
            cwd=plan.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                logf.write(line)
                echo.write(line)
            return proc.wait()
        except KeyboardInterrupt:
            log.warning("Ctrl-C: stopping training (checkpoints so far are kept)")
            _stop(proc)
            logf.write("# interrupted by Ctrl-C\n")
            return 130
        finally:
            if proc.poll() is None:
                _stop(proc)
