"""Weights & Biases, in offline mode unless W&B's own environment says otherwise: nothing leaves the machine;
``wandb sync`` uploads later. ``WANDB_MODE`` (online, offline, disabled) and ``WANDB_PROJECT`` take effect as W&B
documents them; without them the mode is offline and the project the study.

Each process writes ``<run_dir>/wandb/offline-run-<time>-<run_id>/run-<run_id>.wandb``;
a resumed run writes another directory with the same W&B run id (``resume="allow"``). The
W&B project is the study, the group the variant, the run's name "<variant> seed=<n>".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from peftlab.training.tracking import Sink
from peftlab.utils.programs import run_program


def read_history(run_dir: str | Path) -> list[dict]:
    """Every history row (with ``_step``) of every offline run under ``<run_dir>/wandb``,
    read by W&B's own reader (``wandb leet inspect --json``), in file order."""
    rows = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        proc = run_program(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
            seconds=600,
            fix=f"W&B's reader hangs on {path}: move that folder away to resume without its logged history",
            output_bytes=None,  # every history row
        )
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            if record.get("type") == "history":
                rows.append(record["history"]["item"])
    return rows


class WandbSink(Sink):
    def __init__(self, run_dir: Path, info: dict, params: dict):
        import shutil

        import wandb

        if not info["resuming"]:  # an earlier attempt from step 0: its steps are logged again
            for path in Path(run_dir).glob(f"wandb/offline-run-*-{info['run_id']}"):
                shutil.rmtree(path)
        logged: dict[str, int] = {}
        for row in read_history(run_dir):
            for key in row:
                if not key.startswith("_"):
                    logged[key] = max(logged.get(key, -1), row["_step"])
        super().__init__(logged)
        self.wandb = wandb
        self.run = wandb.init(
            # W&B reads WANDB_MODE and WANDB_PROJECT only where init is not given the value: the user's own win
            mode=None if os.environ.get("WANDB_MODE") else "offline",
            dir=str(run_dir),
            project=None if os.environ.get("WANDB_PROJECT") else info["study"],
            group=info["variant"],
            name=f"{info['variant']} seed={info['seed']}",
            id=info["run_id"],
            resume="allow",
            job_type="train",
            tags=[info["method"]],
            config=params,
            reinit="create_new",
            settings=wandb.Settings(
                silent=True,
                console="off",
                x_disable_stats=True,
                disable_git=True,
                save_code=False,
                x_save_requirements=False,
            ),
        )

    def log(self, step: int, numbers: dict[str, float]) -> None:
        self.run.log(numbers, step=step)

    def finish(self, result, numbers, artifacts) -> None:
        if result is None:
            self.run.finish(exit_code=1)
            return
        self.send(result.get("step") or 0, numbers)
        self.run.summary.update(
            {"status": result["status"], **numbers, "health": (result.get("health") or {}).get("verdict")}
        )
        if artifacts:
            artifact = self.wandb.Artifact(f"run-{self.run.id}", type="peftlab-run")
            for path in artifacts:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if result["status"] == "completed" else 1)
