"""Study results as tables, read from the run directories' JSON files (no torch).

``load_results(study_dir)``: one row per run (pending runs included, with status
"pending"; a completed run whose metrics are no finite numbers in their range with status
"damaged" and the first problem as its error): run_id, variant, method, seed, groups, status,
error, every config field as ``config.<section>.<field>``, and the result's metrics (sound
values only), params, memory, timing and merge values, and the sizes of the splits the run read
(``data.<split>_size``). ``load_curves(study_dir)``: validation accuracy against step, one row per
evaluation. ``results_sha256(study_dir)``: one hash of the run files every table is read from, which
the report and the paper record.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from peftlab.analysis.results.portable import portable_text
from peftlab.config.paths import PATH_FIELDS, hashed_path
from peftlab.config.schema import flatten
from peftlab.study.records import SpecRecord, read_spec, read_study_runs
from peftlab.training import run_result
from peftlab.training.run_result import RunResult, metric_damage, metric_problem, run_status, status_of
from peftlab.utils.errors import DataError
from peftlab.utils.files import printable, read_text, refuse_link

log = logging.getLogger(__name__)  # one "peftlab: warning:" line on stderr

# flattened into dotted columns; execution: which executor, job (Slurm) or task (Ray) and node trained each run
SECTIONS = ("metrics", "params", "memory", "timing", "merge", "quantization", "protocol", "execution")


def borrowed_from(spec: SpecRecord) -> str | None:
    """The configuration whose search chose a final run's values where that was not the run's own
    (``tune.share``: spec.json's ``tuned_by.borrowed_from``); None for a run tuned itself or untuned."""
    return (spec.get("tuned_by") or {}).get("borrowed_from")


def read_result(run_dir: Path) -> RunResult:
    """A run's result.json (peftlab.training.run_result); {} when it is missing or corrupt (the run then shows as
    pending or partial). A section that is no JSON object reads as absent."""
    return run_result.read_result(run_dir) or RunResult()


def _flatten(data: dict, prefix: str) -> dict:
    """Dotted columns; lists shown as "a/b", mappings (rank patterns) as JSON."""

    def cell(value):
        if isinstance(value, list):
            return "/".join(map(str, value))
        return json.dumps(value) if isinstance(value, dict) else value

    return {key: cell(value) for key, value in flatten(data, prefix).items()}


RESULT_FILES = ("spec.json", "result.json")  # what load_results reads of a run directory
# what the report reads of a run directory beside them where the run wrote it (a causal LM's greedy replies): hashed
# and packed where present, so that the results hash of a study without it is what it was before it was hashed
OPTIONAL_FILES = (run_result.GENERATIONS,)


def run_dirs(study_dir: Path) -> list[Path]:
    """The study's run directories (those with a spec.json) that its file names now (``superseded_runs``: the
    others). A symbolic link in place of runs/, of a run directory or of a file the results are read from is one
    UserError line: a received study's results are read from inside it, never from where a link points."""
    return split_runs(Path(study_dir))[0]


def superseded_runs(study_dir: Path) -> list[Path]:
    """Run directories of another version of the study (a plugin's older version, an edited config): not among
    the runs its runs.json names, or, in a study older than that file, an older run of the same configuration
    and seed. Left out of every table, the report, the paper and the archive."""
    return split_runs(Path(study_dir))[1]


def split_runs(study_dir: Path) -> tuple[list[Path], list[Path]]:
    """(the study's current run directories, its superseded ones), each in name order."""
    runs = study_dir / "runs"
    refuse_link(runs, "study directory entry")
    found = []
    for path in sorted(runs.glob("*")):
        refuse_link(path, "run directory")
        for name in RESULT_FILES + OPTIONAL_FILES:
            refuse_link(path / name, "run directory entry")
        if (path / "spec.json").is_file():
            found.append(path)
    listed = read_study_runs(study_dir)
    if listed is not None:
        named = set(listed["run_ids"])
        return [p for p in found if p.name in named], [p for p in found if p.name not in named]
    latest: dict[tuple, Path] = {}  # an older study: the newest run of each configuration and seed
    for path in found:
        try:
            spec = read_spec(path)
        except DataError:  # a corrupt spec.json: kept, and load_results names it
            latest[(path.name,)] = path
            continue
        key = (spec["variant"], spec["seed"], tuple(spec["groups"]))
        if key not in latest or written_at(path) >= written_at(latest[key]):
            latest[key] = path
    kept = set(latest.values())
    return [p for p in found if p in kept], [p for p in found if p not in kept]


def written_at(run_dir: Path) -> int:
    """When the run last wrote its result (its spec where it has none), in ns: the newer of two runs wins."""
    for name in ("result.json", "spec.json"):
        try:
            return (run_dir / name).lstat().st_mtime_ns
        except OSError:
            continue
    return 0


def superseded_line(study_dir: str | Path) -> str | None:
    """One line naming the superseded runs (``superseded_runs``) and the plugin versions they ran, or None."""
    old = superseded_runs(Path(study_dir))
    if not old:
        return None
    plugins = sorted(
        {
            f"{plugin.get('distribution')} {plugin.get('version')}"
            for plugin in ((read_result(p).get("provenance") or {}).get("plugin") for p in old)
            if isinstance(plugin, dict)
        }
    )
    made = f" (made by {', '.join(plugins)})" if plugins else ""
    names = ", ".join(p.name for p in old[:4]) + (f" and {len(old) - 4} more" if len(old) > 4 else "")
    return (
        f"left out {len(old)} run{'s' if len(old) > 1 else ''} of another version of the study{made}, which its "
        f"file no longer names: runs/{names}; delete them to make this note go away"
    )


def results_sha256(study_dir: str | Path) -> str:
    """SHA-256 of the study's results: each run directory's name with the SHA-256 of its spec.json and
    result.json ("-" for a missing one) and of its generations.jsonl where it wrote one, one line per run in
    run_dirs' order (``results_lines``). A report or paper built from other results (a run added, retried or
    changed, other greedy replies) carries another hash."""
    return hashlib.sha256(results_lines(study_dir).encode()).hexdigest()


def results_lines(study_dir: str | Path) -> str:
    """The text ``results_sha256`` hashes: "<run directory> <SHA-256 of spec.json> <of result.json>" per run, and
    " <of generations.jsonl>" after them where the run wrote one (``OPTIONAL_FILES``: a study without them hashes
    the lines it always did), each file hashed as a submission packs it (``portable_result``: its paths of this
    machine made portable). A submission packs the files and these lines, so the hash a paper prints can be
    checked from the archive (``sha256sum``) and the study moved to another folder keeps its hash."""

    def digest(path: Path) -> str:
        return hashlib.sha256(portable_result(path, study_dir)).hexdigest()

    return "".join(
        f"{run_dir.name} {' '.join(run_digests(run_dir, digest))}\n" for run_dir in run_dirs(Path(study_dir))
    )


def run_digests(folder: Path, digest) -> list[str]:
    """A run's digests as a line of runs.sha256 lists them: each of RESULT_FILES ("-" for a missing one), then each
    of OPTIONAL_FILES the folder holds; ``digest`` hashes a file (a study's, made portable; an archive's, as packed)."""
    return [digest(folder / name) if (folder / name).is_file() else "-" for name in RESULT_FILES] + [
        digest(folder / name) for name in OPTIONAL_FILES if (folder / name).is_file()
    ]


def portable_result(path: Path, study_dir: str | Path) -> bytes:
    """A run file's bytes as a submission packs them: every absolute path of this machine in its text made
    portable (``results.portable``); a file without one, as it is."""
    data = path.read_bytes()
    text = data.decode("utf-8", errors="surrogateescape")
    shown = portable_text(text, Path(study_dir))
    return data if shown == text else shown.encode("utf-8", errors="surrogateescape")


def study_axes(study_dir: str | Path) -> list[str]:
    """The config keys the study varied (from spec.json), as ``config.<key>`` column names."""
    keys: dict[str, None] = {}
    for run_dir in run_dirs(Path(study_dir)):
        for key in read_spec(run_dir).get("axes", {}):
            keys["config." + key] = None
    return list(keys)


def checkout_path(value: str) -> str:
    """A config's path as the table shows it: one inside the checkout relative to it (``hashed_path``), also where
    a submission's packed run wrote it as ``./...`` (``results.portable``), so that the table a receiver
    regenerates from the packed runs is the author's cell for cell."""
    value = hashed_path(value)
    return value[2:] if value.startswith("./") and len(value) > 2 else value


def load_results(study_dir: str | Path) -> pd.DataFrame:
    """One row per run, in the study's order."""
    rows = []
    for run_dir in run_dirs(Path(study_dir)):
        spec = read_spec(run_dir)
        result = read_result(run_dir)
        row = {
            "order": spec.get("order", len(rows)),
            "run_id": spec["run_id"],
            "variant": spec["variant"],
            "method": spec["method"],
            "seed": spec["seed"],
            "groups": ",".join(spec["groups"]),
            "axes": ",".join(spec.get("axes") or {}),  # the config keys this run's group varies
            "status": run_status(run_dir),
            "error": result.get("error"),
            "borrowed_from": borrowed_from(spec),
        }
        config = result.get("config") or _config_from_yaml(run_dir)
        row.update(_flatten(config or {}, "config."))
        for key in PATH_FIELDS:  # as run ids see them: a run's absolute path and an older run's relative one agree
            if isinstance(row.get(f"config.{key}"), str):
                row[f"config.{key}"] = checkout_path(row[f"config.{key}"])
        if row["status"] == "damaged":  # never a number, never the best: a damaged run, named
            row["error"] = f"result.json: {metric_damage(result)[0]}"
        for section in SECTIONS:
            values = result.get(section) or {}
            if section == "metrics":
                values = {k: v for k, v in values.items() if metric_problem(k, v) is None}
            row.update(_flatten(values, f"{section}."))
        ranks = result.get("ranks") or {}  # low-rank methods: strategy, rank sum and budget
        for key in ("strategy", "sum", "budget"):
            row[f"ranks.{key}"] = ranks.get(key)
        initial = ranks.get("initial")  # an adaptive method's ranks as built and trained, before any pruning
        if isinstance(initial, dict) and all(type(r) is int for r in initial.values()):
            row["ranks.trained_sum"] = sum(initial.values())
        schedule = ranks.get("schedule") if isinstance(ranks.get("schedule"), dict) else {}
        for key in ("tinit", "tfinal", "total_step"):  # AdaLoRA's pruning schedule, in optimizer steps, as it ran
            row[f"ranks.schedule.{key}"] = schedule.get(key)
        provenance = result.get("provenance") or {}
        row["provenance.git_sha"] = provenance.get("git_sha")
        row["provenance.threads"] = provenance.get("threads")
        plugin = provenance.get("plugin")  # a plugin method's code: which version of it made this run
        row["provenance.plugin"] = (
            f"{plugin.get('distribution')} {plugin.get('version')} (code SHA-256 {str(plugin.get('code_sha256'))[:12]})"
            if isinstance(plugin, dict)
            else None
        )
        for key in ("description", "bibtex"):  # what its config gives the paper (MethodConfig.describe, bibtex)
            words = plugin.get(key) if isinstance(plugin, dict) else None
            row[f"provenance.plugin_{key}"] = words if isinstance(words, str) and words.strip() else None
        row["provenance.pinned_arithmetic"] = pinned_arithmetic(provenance.get("arithmetic"))
        classes = (provenance.get("data") or {}).get("num_classes")  # the classes the run's data held
        row["data.num_classes"] = classes if isinstance(classes, int) and not isinstance(classes, bool) else None
        task = (provenance.get("data") or {}).get("task")  # a text folder's task, as the run read its manifest
        if isinstance(task, dict) and isinstance(task.get("what"), str) and isinstance(task.get("categories"), list):
            row["data.task"] = task["what"]
            row["data.task_categories"] = json.dumps([str(name) for name in task["categories"]], ensure_ascii=False)
        sizes = (provenance.get("data") or {}).get("split_sizes")  # the examples each split held, as the run read it
        if isinstance(sizes, dict):
            for split in ("train", "val", "test"):
                row[f"data.{split}_size"] = sizes.get(split)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    unmeasured = [c for c in df.columns if c.startswith("metrics.") and df[c].isna().all()]  # e.g. top-5 of 5 classes
    return df.drop(columns=unmeasured).sort_values("order", kind="stable").reset_index(drop=True)


def typed_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every column of one type, as a Parquet file stores it: a column whose values Arrow cannot hold
    as one type (a plugin's ``method.alpha: auto`` beside another method's ``alpha: 8``) is stored as text, each
    value as results.csv writes it, missing values kept missing. ``peftlab results --format parquet`` and the
    submission's results.parquet write it."""
    import pyarrow as pa

    out = df.copy()
    for column in out.columns:
        if not pd.api.types.is_object_dtype(out[column]):
            continue
        try:
            pa.array(out[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            out[column] = out[column].map(lambda v: None if pd.api.types.is_scalar(v) and pd.isna(v) else str(v))
    return out


def pinned_arithmetic(arithmetic: dict | None) -> str | None:
    """What decides a pinned run's bits beyond the pin (train.reproducible): the CPU's vendor and the branch
    MKL computed in, with the CPU's model, e.g. ``AuthenticAMD (AMD EPYC), MKL COMPATIBLE,STRICT``. None for an
    unpinned run and for runs from before the record named them."""
    if not isinstance(arithmetic, dict) or not arithmetic.get("pinned"):
        return None
    vendor, model, branch = (arithmetic.get(key) for key in ("cpu_vendor", "cpu_model", "mkl_branch"))
    if vendor is None and branch is None:
        return None
    products = f", products through {arithmetic['products']}" if arithmetic.get("products") else ""
    return f"{vendor or 'an unknown vendor'} ({model or 'an unknown model'}), MKL {branch or 'unknown'}{products}"


def _config_from_yaml(run_dir: Path) -> dict | None:
    import yaml

    text = read_text(run_dir / "config.yaml", "run directory entry")
    return None if text is None else yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml


def load_curves(study_dir: str | Path) -> pd.DataFrame:
    """Validation accuracy against step: one row per evaluation record of each completed run's metrics.jsonl.
    A damaged line (not JSON, or an evaluation record without an integer step and a sound val_top1) is left out
    and named, file and line, in one warning (``attrs["damaged_lines"]``: run id -> line numbers), as the
    gradient-flow figure's damaged monitors.jsonl lines are; a last line cut short (a write stopped mid-line by
    a crash) is left out with a note."""
    rows, damaged, cut = [], {}, []
    for run_dir in run_dirs(Path(study_dir)):
        spec = read_spec(run_dir)
        result = read_result(run_dir)
        text = read_text(run_dir / "metrics.jsonl", "run directory entry") if status_of(result) == "completed" else None
        if text is None:
            continue
        r = ((result.get("config") or {}).get("method") or {}).get("r")
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = curve_point(line)
            except ValueError:
                if number == len(lines) and not text.endswith("\n"):
                    cut.append(run_dir.name)
                else:
                    damaged.setdefault((spec["run_id"], run_dir.name), []).append(number)
                continue
            if record is not None:
                rows.append(
                    {
                        "run_id": spec["run_id"],
                        "variant": spec["variant"],
                        "method": spec["method"],
                        "seed": spec["seed"],
                        "step": record["step"],
                        "val_top1": record["val_top1"],
                        "val_perplexity": record.get("val_perplexity"),  # a causal LM's
                        "config.method.r": r,
                    }
                )
    warn_damaged_curves(damaged, cut)
    columns = ["run_id", "variant", "method", "seed", "step", "val_top1", "val_perplexity", "config.method.r"]
    curves = pd.DataFrame(rows, columns=columns)
    curves.attrs["damaged_lines"] = {run_id: numbers for (run_id, _), numbers in damaged.items()}
    return curves


def curve_point(line: str) -> dict | None:
    """A line of metrics.jsonl as a point of the validation curve; None for a record of another kind (a training
    step's). A ValueError for a damaged line: not a JSON object, or an evaluation record (``eval``, ``epoch``, or
    any with a ``val_top1``) whose step is no integer or whose val_top1 or val_perplexity is no sound value."""
    record = json.loads(line)  # JSONDecodeError is a ValueError
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("kind") not in ("eval", "epoch") and "val_top1" not in record:
        return None
    step = record.get("step")
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or metric_problem("val_top1", record.get("val_top1", "absent")) is not None
        or metric_problem("val_perplexity", record.get("val_perplexity")) is not None
    ):
        raise ValueError("not an evaluation record")
    return record


def warn_damaged_curves(damaged: dict[tuple[str, str], list[int]], cut: list[str]) -> None:
    """One warning naming the damaged lines of metrics.jsonl (run directory and line numbers, a few of each), and
    one naming the files whose last line was cut short."""

    def shown(names: list) -> str:
        return ", ".join(map(str, names[:NAMED])) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")

    if damaged:
        total = sum(len(numbers) for numbers in damaged.values())
        where = "; ".join(
            f"runs/{printable(name)}/metrics.jsonl line{'s' if len(numbers) > 1 else ''} {shown(numbers)}"
            for (_, name), numbers in list(damaged.items())[:NAMED]
        )
        more = f"; and {len(damaged) - NAMED} more runs" if len(damaged) > NAMED else ""
        log.warning(
            f"{total} damaged line{'s' if total > 1 else ''} of metrics.jsonl left out of the validation curves "
            f"(not JSON, or an evaluation record without an integer step and sound val_top1 and val_perplexity): "
            f"{where}{more}"
        )
    if cut:
        files = shown([f"runs/{printable(name)}/metrics.jsonl" for name in cut])
        log.warning(
            f"left out the last line of {files}: cut short (a write stopped mid-line, as by a crash), it holds no "
            "evaluation"
        )


NAMED = 5  # runs, and line numbers of a run, named one by one in a warning; more are counted


def environment(study_dir: str | Path) -> dict:
    """Provenance of the first completed run: versions, hardware, git sha, threads, dtype."""
    for run_dir in run_dirs(Path(study_dir)):
        result = read_result(run_dir)
        if status_of(result) == "completed":
            return result.get("provenance") or {}
    return {}
