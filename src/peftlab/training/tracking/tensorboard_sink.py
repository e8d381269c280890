"""TensorBoard: event files in ``<run_dir>/tensorboard/<variant seed=N>/`` (scalars, config text).

Point TensorBoard at a study's ``runs/`` directory: each run shows as
``<run_id>/tensorboard/<variant>_seed=<n>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from peftlab.training.tracking import Sink


def log_dir(run_dir: Path, info: dict) -> Path:
    label = re.sub(r"[^A-Za-z0-9=.,+_-]+", "_", f"{info['variant']}_seed={info['seed']}").strip("_")
    return Path(run_dir) / "tensorboard" / label


def read_scalars(directory: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar event in every event file under ``directory``,
    read raw (nothing merged or purged), in file order."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(directory).rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


class TensorBoardSink(Sink):
    def __init__(self, run_dir: Path, info: dict, params: dict):
        from torch.utils.tensorboard import SummaryWriter

        directory = log_dir(run_dir, info)
        if not info["resuming"]:  # an earlier attempt from step 0: its steps are logged again
            for path in directory.glob("events.out.tfevents.*"):
                path.unlink()
        fresh = not any(directory.glob("events.out.tfevents.*"))
        super().__init__({} if fresh else {tag: max(s for s, _ in v) for tag, v in read_scalars(directory).items()})
        self.writer = SummaryWriter(str(directory))
        if fresh:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(params, sort_keys=False) + "```", 0)
            self.writer.add_text("run", ", ".join(f"{k}: {info[k]}" for k in ("study", "variant", "seed", "run_id")), 0)

    def log(self, step: int, numbers: dict[str, float]) -> None:
        for tag, value in numbers.items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, result, numbers, artifacts) -> None:
        if result is not None:
            step = result.get("step") or 0
            self.send(step, numbers)
            verdict = (result.get("health") or {}).get("verdict")
            self.writer.add_text(
                "result",
                f"status: {result['status']}; health: {verdict}; "
                f"converged: {(result.get('convergence') or {}).get('converged')}",
                step,
            )
        self.writer.close()
