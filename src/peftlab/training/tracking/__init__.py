"""The one ``log(record)`` seam of a run: metrics.jsonl and monitors.jsonl always, plus the
tracking sinks the config names (``track: [tensorboard, mlflow, wandb]``).

Every record goes through ``RunLog.__call__``: it is appended to its JSONL file (monitor
records to monitors.jsonl, the rest to metrics.jsonl) and its numbers go to every sink.
``finish`` sends the final result and the artifacts (the adapter, result.json).

Resume: the JSONL files are cut back to the checkpoint's step and written again from there.
A sink cannot be cut back, so at open each sink reads its own store back (TensorBoard's event
files, MLflow's metric history, W&B's offline transaction logs) and the log skips every
(key, step) the sink already holds: no step is logged twice in any sink. The records the
JSONL files keep are then replayed to every sink, so steps that a kill lost in a sink's
buffer (TensorBoard's queue, W&B's write buffer) before they reached its store are filled
in from the files. A run that starts from step 0 again (no checkpoint) starts its sinks
afresh too: its earlier event files and offline W&B runs are removed, its earlier MLflow
run is tagged superseded.

``track_names: lora`` renames what the sinks get to the LoRA fine-tuning document's dashboard
(``TRACK_NAMES``): the JSONL files keep peftlab's records either way.

SINKS is a plain registry; a sink's package is imported only when a run asks for it, and a
missing one is a one-line ConfigError naming the field and the fix.
"""

from __future__ import annotations

import importlib
import json
from importlib.util import find_spec
from pathlib import Path

from peftlab.config.schema import RunConfig, config_hash, flatten, to_dict
from peftlab.utils.errors import ConfigError
from peftlab.utils.files import read_json, read_lines, write_atomic

# sink name -> (module, class, packages it needs)
SINKS = {
    "tensorboard": ("peftlab.training.tracking.tensorboard_sink", "TensorBoardSink", ("tensorboard",)),
    "mlflow": ("peftlab.training.tracking.mlflow_sink", "MLflowSink", ("mlflow", "sqlalchemy", "alembic")),
    "wandb": ("peftlab.training.tracking.wandb_sink", "WandbSink", ("wandb",)),
}
FILES = {"monitors": "monitors.jsonl"}  # any other kind: metrics.jsonl
ADAPTER_STATS = ("effective_rank", "rank90", "stable_rank", "norm_update", "norm_A", "norm_B")
RANK_STATS = ("effective_rank", "rank90", "stable_rank")  # how much of its rank an adapter uses
# track_names: lora. The LoRA fine-tuning document's namespaces: an adapter's norms under lora_adapters/,
# its rank use under lora_rank/, parameter counts, time and memory under efficiency/, and the
# merge and frozen-base checks under verification/; every other name is peftlab's.
TRACK_NAMES = {"peftlab": {}, "lora": {"params": "efficiency", "timing": "efficiency", "memory": "efficiency"}}


def check_trackers(track: tuple[str, ...]) -> None:
    """Every named sink's packages are importable, or one ConfigError line."""
    for name in track:
        for package in SINKS[name][2]:
            if find_spec(package) is None:
                raise ConfigError(
                    f"track={list(track)!r} is invalid: the {name} sink needs the '{package}' package, "
                    "which is not installed; install the extra (pip install -e '.[track]') "
                    f"or remove {name} from track"
                )


def run_info(cfg: RunConfig, run_dir: Path) -> dict:
    """study, variant, seed and run id: from spec.json in a study, else from the config."""
    spec = read_json(run_dir / "spec.json") or {}
    in_study = bool(spec)
    return {
        "study": cfg.name,
        "variant": spec.get("variant", cfg.name),
        "seed": cfg.seed,
        "run_id": spec.get("run_id") or config_hash(cfg),  # a study's spec.json names it
        "method": cfg.method.name,
        "store_dir": str(run_dir.parent.parent if in_study else run_dir),
        "in_study": in_study,
    }


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a record as sink keys: train/*, val/*, grad/<group>, adapter/<layer>/<stat>."""
    kind = record.get("kind")
    if kind == "monitors":
        out = {f"grad/{group}": norm for group, norm in record["grad"].items()}
        for layer, stats in record["adapters"].items():
            out.update({f"adapter/{layer}/{stat}": stats[stat] for stat in ADAPTER_STATS})
        out["health/flags"] = len(record["flags"])
        return out
    prefix = "train" if kind == "step" else "val" if kind in ("eval", "epoch") else kind
    out = {}
    for key, value in record.items():
        if (
            key in ("kind", "step")
            or (key == "epoch" and prefix == "val")
            or isinstance(value, bool)
            or not isinstance(value, (int, float))
        ):
            continue
        out[f"{prefix}/{key.removeprefix('val_')}"] = float(value)
    return out


def result_scalars(result: dict) -> dict[str, float]:
    """The final numbers of result.json: test/*, val/best_top1 and the monitors' summary."""
    metrics = result.get("metrics") or {}
    out = {
        f"test/{k.removeprefix('test_')}": v
        for k, v in metrics.items()
        if k.startswith("test_") and isinstance(v, (int, float))
    }  # None: a tuning trial is not tested
    if metrics.get("best_val_top1") is not None:
        out["val/best_top1"] = metrics["best_val_top1"]
    for section in ("params", "timing", "memory", "merge", "convergence"):
        for key, value in flatten(result.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{section}/{key}"] = float(value)
    merge, frozen = result.get("merge"), result.get("frozen_base") or {}
    if isinstance(merge, dict) and isinstance(merge.get("ok"), bool):
        out["merge/ok"] = float(merge["ok"])
    if isinstance(frozen.get("equal"), bool):
        out["frozen_base/equal"] = float(frozen["equal"])
    health = result.get("health") or {}
    for flag, count in (health.get("counts") or {}).items():
        out[f"health/{flag}"] = float(count)
    return {k: v for k, v in out.items() if v == v}  # no NaN


def renamed(numbers: dict[str, float], names: str) -> dict[str, float]:
    """``numbers`` under the names ``track_names`` chooses (``TRACK_NAMES``)."""
    if names == "peftlab":
        return numbers
    out = {}
    for key, value in numbers.items():
        section, _, rest = key.partition("/")
        if section == "adapter":
            stat = rest.rpartition("/")[2]
            key = f"{'lora_rank' if stat in RANK_STATS else 'lora_adapters'}/{rest}"
        elif section in ("merge", "frozen_base"):
            key = f"verification/{section}_{rest.replace('/', '_')}"
        elif section in TRACK_NAMES[names]:
            key = f"{TRACK_NAMES[names][section]}/{section}_{rest.replace('/', '_')}"
        out[key] = value
    return out


class RunLog:
    """``log(record)``: the JSONL files and every sink; ``records()``: everything logged so far."""

    def __init__(self, run_dir: Path, sinks: list, names: str = "peftlab"):
        self.run_dir, self.sinks, self.names = Path(run_dir), sinks, names
        self._records: list[dict] = []
        self.lines: dict[str, int] = {}  # file name -> records written to it; a checkpoint keeps these

    def truncate(self, step: int, lines: dict[str, int] | None = None) -> None:
        """Keep the JSONL records a checkpoint covers and replay them to the sinks, which skip
        what they hold.

        ``lines`` (what ``self.lines`` was when the checkpoint was written) keeps exactly the
        first lines of each file, so a resumed run writes every later record once: none twice
        (a kill after an epoch's record) and none lost (a kill before it). Without it (no
        checkpoint, or one written before checkpoints counted lines) the records up to ``step``
        are kept. A line cut short by a kill is dropped either way.
        """
        self._records, self.lines = [], {}
        for name in sorted({*FILES.values(), "metrics.jsonl"}):
            path = self.run_dir / name
            kept, written = [], read_lines(path, "run directory entry")
            if written is not None:
                for line in written:
                    if lines is not None and len(kept) >= lines.get(name, 0):
                        break
                    try:
                        record = json.loads(line)
                        if lines is not None or record["step"] <= step:
                            kept.append(record)
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
                text = "".join(json.dumps(r) + "\n" for r in kept)
                write_atomic(path, lambda tmp, text=text: Path(tmp).write_text(text))
            self._records += kept
            self.lines[name] = len(kept)
        for record in self.records():
            numbers = renamed(scalars(record), self.names)
            for sink in self.sinks:
                sink.send(record["step"], numbers)

    def __call__(self, record: dict) -> None:
        name = FILES.get(record["kind"], "metrics.jsonl")
        with open(self.run_dir / name, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.lines[name] = self.lines.get(name, 0) + 1
        self._records.append(record)
        numbers = renamed(scalars(record), self.names)
        for sink in self.sinks:
            sink.send(record["step"], numbers)

    def records(self) -> list[dict]:
        return sorted(self._records, key=lambda r: r["step"])  # stable: file order within a step

    def finish(self, result: dict | None) -> None:
        """Send the final result (None: the run was interrupted) and close every sink."""
        artifacts = [p for p in (self.run_dir / "adapter.safetensors", self.run_dir / "result.json") if p.is_file()]
        for sink in self.sinks:
            sink.finish(result, renamed(result_scalars(result), self.names) if result else {}, artifacts)
        self.sinks = []


class Sink:
    """What every sink does: skip (key, step) pairs its store already holds, then ``log``."""

    def __init__(self, logged: dict[str, int]):
        self.logged = dict(logged)  # key -> the highest step the store holds

    def send(self, step: int, numbers: dict[str, float]) -> None:
        fresh = {k: v for k, v in numbers.items() if step > self.logged.get(k, -1)}
        if fresh:
            self.log(step, fresh)
            self.logged.update(dict.fromkeys(fresh, step))

    def log(self, step: int, numbers: dict[str, float]) -> None:
        raise NotImplementedError

    def finish(self, result: dict | None, numbers: dict[str, float], artifacts: list[Path]) -> None:
        raise NotImplementedError


def open_log(cfg: RunConfig, run_dir: str | Path) -> RunLog:
    """The run's log with the sinks ``cfg.track`` names, each opened on its store."""
    run_dir = Path(run_dir)
    check_trackers(cfg.track)
    return RunLog(run_dir, open_sinks(cfg, run_dir) if cfg.track else [], cfg.track_names)


def open_sinks(cfg: RunConfig, run_dir: Path) -> list:
    """The sinks ``cfg.track`` names, each given the run's identity and its resolved config as parameters."""
    info = {**run_info(cfg, run_dir), "resuming": (run_dir / "checkpoint").exists()}
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(to_dict(cfg)).items()}
    sinks = []
    try:
        for name in cfg.track:
            module, cls, _ = SINKS[name]
            sinks.append(getattr(importlib.import_module(module), cls)(run_dir, info, params))
    except BaseException:
        for sink in sinks:
            sink.finish(None, {}, [])
        raise
    return sinks


def finish_log(log: RunLog | None, result: dict | None) -> None:
    if log is not None:
        log.finish(result)
