"""The typed records a study writes in its folder that the report and the paper read back, each with its one
reader: a run's ``spec.json`` (``SpecRecord``, ``RunSpec.record``; ``read_spec``), a search's
``tune/<search>/selection.json`` (``Selection``, which ``search.write_selection`` writes after every trial;
``read_selection``) and the study's ``command.json`` (``CommandRecord``, ``peftlab study``'s; ``read_command``).
No torch: analysis imports them. (phases.jsonl's ``PhaseRecord`` is in ``phases``, beside its writer.)

The parts come from their own writers: ``Search.record()`` (the search), ``Axis.record()`` (its axes),
``trials.trial_record`` (a trial), ``edge.edge_summary`` (an edge-following grid's summary). A file that is not
of this shape (edited, damaged, another tool's) is one line naming the file and the field
(``typed_json.DamagedFile``); keys the record does not know are kept and not read.
"""

from pathlib import Path
from typing import Annotated, Any, Literal, Required, TypedDict

from peftlab.utils.errors import DataError
from peftlab.utils.files import read_json
from peftlab.utils.typed_json import DamagedFile, Scalar, json_problem, non_empty, read_record

SELECTION = "selection.json"
FINISHED = ("COMPLETE", "PRUNED", "FAIL")  # a trial's states once asked and ended: its params hold every axis
Params = dict[str, Scalar]  # dotted config key -> the value a trial ran at


class GridAxis(TypedDict):
    key: str  # a dotted config key: train.lr
    values: Annotated[list[Scalar], non_empty]  # the values searched


class RangeAxis(TypedDict):
    key: str
    low: float
    high: float
    log: bool  # drawn on a log scale


class SearchRecord(TypedDict, total=False):
    """``Search.record()``: what the study file's tune: section says of this search."""

    method: Required[str]
    axes: Required[Annotated[list[GridAxis | RangeAxis], non_empty]]
    search: Required[str]  # grid, random or halving
    trials: Required[int]  # the budget
    metric: Required[str]  # the validation metric trials are scored by
    seeds: Required[Annotated[list[int], non_empty]]  # the tuning seeds: a trial's score is the mean over them
    sampler_seed: int
    reduction_factor: int
    follow_edge: bool  # only when set
    rungs: list[int]  # a grid's rungs (tune.rungs), only when set


class Trial(TypedDict, total=False):
    """``trials.trial_record``: one trial, its score never a test metric."""

    number: Required[int]
    state: Required[Literal["COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING"]]  # Optuna's
    value: Required[float | None]  # the mean validation score over the tuning seeds
    params: Required[Params]  # {} for a trial not asked yet
    run_ids: list[str]
    reported: dict[str, float]  # step -> the validation score each evaluation reported (halving); epoch -> at a rung
    diverged: str  # why: a non-finite loss, or a score at chance; never chosen
    added: str  # an edge-following grid's point: why it was added
    refused: list[str]  # the points the config refused on the way to it


class Chosen(TypedDict):
    trial: int
    value: float
    metric: str
    params: Params


class Configurations(TypedDict, total=False):
    searched: Required[str]  # the configuration the search ran on
    borrowed_by: list[str]  # those that ran at its choice (tune.share); none where absent


class FollowEdge(TypedDict):
    """``edge.edge_summary``."""

    grid: int
    added: int
    unspent: int
    refused: list[str]
    at_edge: str | None
    stopped: str | None


class Selection(TypedDict, total=False):
    fingerprint: Required[str]  # names the search's journal
    configurations: Configurations  # files written before tune.share lack it
    search: Required[SearchRecord]
    done: Required[bool]
    trials: Required[list[Trial]]
    chosen: Required[Chosen | None]  # once done
    follow_edge: FollowEdge  # an edge-following grid, once done


def read_selection(path: Path) -> Selection | None:
    """``path``'s record, checked against ``Selection`` and against itself (each finished trial and the choice hold
    a value of every axis); None when there is no such file."""
    record = read_record(path, Selection)
    if record is None:
        return None
    keys = [axis["key"] for axis in record["search"]["axes"]]
    finished = [
        (f"trials[{i}]", t) for i, t in enumerate(record["trials"]) if t["state"] in ("COMPLETE", "PRUNED", "FAIL")
    ]
    for where, part in finished + ([("chosen", record["chosen"])] if record["chosen"] else []):
        missing = [key for key in keys if key not in part["params"]]
        if missing:
            raise DamagedFile(f"{path} is damaged: {where}.params has no value of the axis {missing[0]}")
    return record


class TunedBy(Chosen, total=False):
    """A final run's search: its chosen trial (selection.json's ``chosen``), and where the run borrows another
    configuration's choice (tune.share), whose."""

    borrowed_from: str


class SpecRecord(TypedDict, total=False):
    """``spec.json`` in a run directory (``RunSpec.record``, with the runner's ``order``)."""

    run_id: Required[str]
    variant: Required[str]
    method: Required[str]
    seed: Required[int]
    groups: Required[list[str]]
    axes: dict[str, Any]  # the axis values that made this run
    order: int  # its place in the study
    tuned_by: TunedBy


SPEC_FILE = "spec.json"


def read_spec(run_dir: Path) -> SpecRecord:
    """A run's spec.json checked against ``SpecRecord``, or one ``DataError`` line naming the field when it is
    corrupt (``peftlab study`` rewrites it)."""
    path = run_dir / SPEC_FILE
    spec = read_json(path)
    problem = "expected a JSON object" if spec is None else json_problem(spec, SpecRecord)
    if problem is not None:
        raise DataError(f"{path} is corrupt: {problem}; run the same `peftlab study` command again to rewrite it")
    return spec


COMMAND_FILE = "command.json"  # the command that last ran the study, which the paper's reproducibility names


class CommandRecord(TypedDict):
    """``command.json``: what ``peftlab study`` wrote when it last ran the study (``cli.study.record_command``)."""

    argv: Annotated[list[str], non_empty]  # peftlab and its arguments
    cwd: str  # the directory they were given in


def read_command(study_dir: Path) -> CommandRecord | None:
    """The study's command.json checked against ``CommandRecord``; None for a study without one."""
    return read_record(study_dir / COMMAND_FILE, CommandRecord)


RUNS_FILE = "runs.json"  # the run ids the study file names now, in its order (``runner.run_final``)


class StudyRuns(TypedDict):
    """``runs.json``: the study's runs as its file and the installed code name them when it last ran. A run
    directory under runs/ that it does not list was made by another version of the study (a plugin's new
    version, an edited config): superseded, left out of the report, the paper and the archive."""

    run_ids: list[str]


def read_study_runs(study_dir: Path) -> StudyRuns | None:
    """The study's runs.json checked against ``StudyRuns``; None for a study that has none (older than it)."""
    return read_record(study_dir / RUNS_FILE, StudyRuns)
