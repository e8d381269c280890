"""``peftlab reproduce ARCHIVE_OR_FOLDER [--runs all|one-seed|N] [--out DIR] [--data DIR] [--run-archive-code[=HASH]]``:
a received submission checked and rerun, number by number (docs/reproduce.md). A received archive is data, never
code, until the user says otherwise; every check comes before any action, and a failed check stops them.

The phases, one function each, in this order (each in the module named for it):

- ``receive`` (here; ``received.py`` reads the archive): the archive surveyed as it streams (``received.survey``:
  sizes, names, kinds; nothing written), ``--out`` claimed (a new folder, or the one an earlier reproduce of the
  same archive made: ``claim_out``), the archive unpacked into OUT/archive and archive.json read through its schema;
- ``check`` (``checks.py``): this machine against the runs' (a note per difference that can move numbers), the
  configs' paths (inside the archive, or one line, exit 2), the files against SHA256SUMS, the results hash
  recomputed from the packed runs, the plugins' code and folders, the data's checksums: ``Checks``;
- ``gate`` (``checks.py``): a difference stops the reruns before anything trains or imports (exit 1), an absent
  dataset too (one line, exit 2);
- ``consent`` (``plugins.py``): every file the reruns would put on the path is listed first, with or without the
  option (``list_code``: OUT/plugin-code.txt, their count and SHA-256 printed); reruns that need the archive's plugin
  code stop (one line, exit 2) unless ``--run-archive-code`` was given, or ``--run-archive-code=HASH`` with HASH the
  start of the listed SHA-256; with it, only the declared packages are importable, from a folder of their own
  (``plugin_code``), and whatever that code raises in the reruns ends in the verdict;
- ``rerun`` (``rerun.py``): the chosen runs from the archived configs (into OUT/rerun), as ``peftlab study``
  trains them;
- ``compare`` (``rerun.py``): each with its archived result (``rerun.compare_runs``, the rule in
  ``rerun.RULE``).

One verdict line; exit 0 when everything agrees, 1 when anything differs; OUT/reproduce.json records it all, the
received texts as they are (the terminal is given them through the CLI's escaper).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from peftlab.analysis.archive.checks import Checks, check, gate, show
from peftlab.analysis.archive.claims import compare_claims
from peftlab.analysis.archive.datasets import rerun_environment
from peftlab.analysis.archive.plugins import CodeList, consent, consent_hash, list_code, show_code
from peftlab.analysis.archive.received import (
    KEPT,
    archived_runs,
    capped,
    read_archive_record,
    survey,
    unpack,
    walk_folder,
)
from peftlab.analysis.archive.recorded import check_recorded
from peftlab.analysis.archive.regenerate import regenerate, study_folder
from peftlab.analysis.archive.reproduce_md import compare_reproduce_md
from peftlab.analysis.archive.rerun import (
    RULE,
    base_lines,
    compare,
    draw,
    products_environment,
    replies_of,
    rerun,
    trials_need_runs,
)
from peftlab.analysis.archive.rerun import sample_seed as sample_seed_of
from peftlab.analysis.archive.trials import compare_choices, rerun_dirs, said_choices
from peftlab.analysis.archive.verdicts import (
    Evidence,
    Phases,
    checked_record,
    closing_record,
    machine_lines,
    reruns_of,
    verdict_lines,
)
from peftlab.utils.cpu import PRODUCTS_SWITCH
from peftlab.utils.errors import UserError, stop_behind
from peftlab.utils.files import one_line, read_json, refuse_link, write_json_atomic

RECORD = "reproduce.json"
OWNER = "reproduce-of.json"  # written first into OUT: the archive it reproduces (received.survey's identity)


def default_out(source: Path) -> Path:
    name = source.name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".tar") or "submission"
    return Path(f"{name}-reproduced")


def reproduce(
    source: str | Path,
    runs: str = "one-seed",
    out: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    data: str | Path | None = None,
    run_archive_code: bool | str = False,
    sample_seed: int | str | None = None,
    trials: bool = False,
) -> int:
    """Check the archive at ``source`` and rerun ``runs`` of it into ``out``; the exit status (0 nothing differs, 1
    something does). ``say`` prints a line (the CLI's escapes what the archive holds); ``run_archive_code``: the
    archive's plugin code may be imported for the reruns (``--run-archive-code``, True or a hash: ``consent``);
    ``sample_seed``: the seed that draws the reruns (``rerun.draw``); ``trials``: the tuning searches rerun
    (``trials``). The closing lines say the three verdicts (``verdicts``)."""
    trials_need_runs(str(runs), trials)
    run_archive_code = consent_hash(run_archive_code)
    source = Path(source)
    out = Path(out) if out else default_out(source)
    kept = data_folder(data)
    seed = sample_seed_of(sample_seed)
    phases, evidence = Phases(), Evidence()
    with phases.timed("unpack"):
        root, record = receive(source, out)
    packed = archived_runs(root)
    chosen = draw(packed, runs, seed)
    checks, listed = checked(root, record, (kept, packed), out, phases, evidence, say)
    stopped = gate(checks, chosen)
    evidence.stopped = stopped is not None and bool(chosen)
    evidence.runs_total = sum(1 for run in packed if run["result"].get("status") == "completed")
    evidence.sample = "all" if runs == "all" else f"drawn with sample seed {seed}"
    evidence.tuned = any(run.get("tuned_by") for run in packed)
    allowed: list[dict] = []
    if chosen and stopped is None:
        allowed = consent(root, record, out, listed, run_archive_code)
        say(f"rule: {RULE}")
        say(f"rerunning {len(chosen)} of the {len(packed)} archived runs into {out / 'rerun'}")
        os.environ.update(rerun_environment(checks.named, kept))  # the reruns read each dataset by name as checked
        set_products(record, say)
        with code_raised(bool(allowed), evidence, say):
            rerun_and_compare(root, record, (chosen, packed), out, checks, phases, evidence, say, progress, trials)
    if runs == "all":
        claims(root, record, phases, evidence, say)
    drawn = seed if chosen and runs != "all" else None  # the seed that drew the reruns, where one did
    for line in machine_lines(record, evidence, phases, drawn):
        say(line)
    closing, level, agree = verdict_lines(evidence)
    if stopped is not None:  # the checks stopped the reruns: that is the verdict
        closing[-1] = stopped
    for line in closing:
        say(line)
    differences = evidence.archive + evidence.run_differences + evidence.trial_differences
    differences += evidence.claims.differ if evidence.claims else []
    write_json_atomic(
        out / RECORD,
        {
            "source": str(source),
            "archive": str(root),
            "runs": runs,
            "environment": checks.notes,
            "results_sha256": checks.sha,
            "rule": RULE,
            "rerun": stopped is None and bool(chosen),
            "plugin_code": listed.record() if listed else None,
            "plugin_code_run": allowed,
            "compared": evidence.compared,
            "differences": capped(differences, KEPT),
            "differences_count": len(differences),
            "data_not_checked": checks.unseen,
            "not_checked": evidence.unchecked,  # files nothing packed makes again, with why
            "tuning_choices": evidence.trials,
            "tuning_choices_moved": evidence.trial_notes,
            "verdicts": closing[:-1],
            "verdict": closing[-1],
            "reproduced": agree and level >= 2,
            **closing_record(evidence, record, phases, drawn, level),
        },
    )
    return 0 if agree else 1


def data_folder(data: str | Path | None) -> Path | None:
    """``--data``: a folder, or None."""
    kept = Path(data) if data is not None else None
    if kept is not None and not kept.is_dir():
        raise UserError(
            f"--data {kept} is not a folder: expected the folder that holds the datasets, each in a folder named "
            "as in the archive's data/"
        )
    return kept


def checked(
    root: Path,
    record: dict,
    given: tuple[Path | None, list[dict]],
    out: Path,
    phases: Phases,
    evidence: Evidence,
    say: Callable[[str], None],
) -> tuple[Checks, CodeList | None]:
    """The check phase (``checks.check``) and every other packed file made again from the runs and archive.json
    (``regenerate``, ``recorded``; ``given``: --data's folder, the packed runs), their differences printed and
    recorded in ``evidence`` (what was checked, and what was not, named); then every file of
    the archive's plugins that the reruns would put on the path, listed and printed (``plugins.list_code``), whether
    or not they may run, before anything could import them."""
    kept, packed = given
    with phases.timed("check"):
        checks = check(root, record, kept)
    with phases.timed("regenerate"):
        regenerated = regenerate(root, record, draw=not checks.differences)  # drawing is most of its time
        made = check_recorded(root, record, packed)
        with tempfile.TemporaryDirectory(prefix="peftlab-reproduce-md-") as tmp:
            compare_reproduce_md(root, record, study_folder(root, record, Path(tmp)), made)
        regenerated.differ += made.differ
        regenerated.compared |= made.compared
        regenerated.skipped += made.skipped
        checks.differences += regenerated.differ
    show(checks, say)
    for line in checks.named.by_reruns:
        say(f"note: {line}")
    evidence.archive = list(checks.differences)
    evidence.not_checked = [f"data not checked (absent: {', '.join(checks.unseen)})"] if checks.unseen else []
    evidence.not_checked += [f"supplied file not checked: {line}" for line in checks.supplied.absent]
    evidence.unchecked = list(regenerated.skipped)
    evidence.checked = checked_record(
        root, record, checks.sha, checks.found, checks.named, checks.supplied, regenerated
    )
    listed = list_code(root, record, out)
    if listed is not None:
        show_code(listed, record, say)
    return checks, listed


@contextmanager
def code_raised(allowed: bool, evidence: Evidence, say: Callable[[str], None]):
    """With the archive's code on the path (``allowed``), whatever the block raises (that code's own error, or one
    it caused) is a difference, its one line: the verdict and reproduce.json follow, never a traceback. A Ctrl-C
    still stops (the same command resumes), and without the archive's code an error is raised as it is."""
    try:
        yield
    except (Exception, SystemExit) as err:
        if not allowed or isinstance(stop_behind(err), KeyboardInterrupt):
            raise
        stop = f"the reruns stopped with the archive's plugin code on the path: {one_line(err)}"
        say(f"differs: {stop}")
        evidence.run_differences.append(stop)


def set_products(record: dict, say: Callable[[str], None]) -> None:
    """The reruns' products as the runs computed them (MKL's switch set where pinned runs recorded MKL's products),
    not as this shell asks (a switch left set is removed for runs of the pin's products)."""
    os.environ.pop(PRODUCTS_SWITCH, None)
    os.environ.update(products_environment(record))
    if PRODUCTS_SWITCH in os.environ:
        say(
            "the runs recorded MKL's products (the pin before 2026-11-29, MKL's COMPATIBLE branch): rerunning with "
            f"them ({PRODUCTS_SWITCH}={os.environ[PRODUCTS_SWITCH]})"
        )


def rerun_and_compare(
    root: Path,
    record: dict,
    runs: tuple[list[dict], list[dict]],
    out: Path,
    checks: Checks,
    phases: Phases,
    evidence: Evidence,
    say: Callable[[str], None],
    progress: bool,
    trials: bool,
) -> None:
    """The rerun and compare phases: ``runs`` (the chosen, the packed) rerun into OUT/rerun and each compared with
    its archived run, the base and (``trials``) each search's choice too; every line printed, ``evidence`` filled."""
    chosen, packed = runs
    with phases.timed("rerun"):
        results = rerun(root, record, chosen, out, progress, checks.found, trials)
    replies = replies_of(root, chosen, rerun_dirs(out / "rerun"))  # greedy replies: packed and rerun
    evidence.compared, lines = compare(chosen, results, packed, replies)
    lines += base_lines(record, out / "configs" / Path(record["study"]).name, same_class=not checks.notes)
    for line in lines:
        say(line)
    evidence.run_differences = [line for line in lines if not line.split(": ", 1)[1].startswith("reproduced")]
    if trials:  # each search's choice against the archive's
        differ, evidence.trials = compare_choices(chosen, rerun_dirs(out / "rerun"))
        evidence.trial_differences, evidence.trial_notes = said_choices(differ, other_class=bool(checks.notes))
        for line in evidence.trial_differences:
            say(f"differs: {line}")
        for line in evidence.trial_notes:
            say(f"note: {line}")


# --- receive ---------------------------------------------------------------------------------------------------


def receive(source: Path, out: Path) -> tuple[Path, dict]:
    """(the archive's folder, its archive.json): surveyed, ``out`` claimed for it, unpacked, read."""
    identity, _ = survey(source)
    claim_out(out, identity, source)
    root = unpack(source, out / "archive")
    return root, read_archive_record(root)


def claim_out(out: Path, identity: str, source: Path) -> None:
    """``out`` made peftlab's for the archive ``identity``: a new (or empty) folder, or one that an earlier
    reproduce of the same archive made (OWNER says so; it is resumed). A folder of anything else, or one of
    another archive, is one UserError line: no user's file is replaced and no two archives are merged. No entry
    under it may be a symbolic link (nothing is written or read through one)."""
    refuse_link(out, "--out folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: expected a folder (made when missing)")
    if out.is_dir() and any(out.iterdir()):
        refuse_link(out / OWNER, "--out folder entry")
        owner = read_json(out / OWNER)
        if owner is None:
            raise UserError(
                f"--out {out} holds files that no `peftlab reproduce` made: give a new folder (reproduce writes "
                "into a folder of its own, or resumes one it made for the same archive)"
            )
        if owner.get("archive") != identity:
            raise UserError(
                f"--out {out} holds the reproduction of another archive ({owner.get('source')!r}): give a new folder "
                "(two archives' files and runs are never merged)"
            )
        walk_folder(out, "--out folder", receiver=("archive",), bounded=False)  # links, devices: the reruns' too
        for folder in (out / "archive").iterdir() if (out / "archive").is_dir() else []:
            walk_folder(folder, "--out folder")  # the archive unpacked, the receiver's data/<name> and base/ aside
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / OWNER, {"archive": identity, "source": str(source)})


def claims(root: Path, record: dict, phases: Phases, evidence: Evidence, say: Callable[[str], None]) -> None:
    """With every run rerun (``--runs all``) and each compared, the paper's claims recomputed from the reruns and
    compared with the archive's (``claims.compare_claims``); a line per claim that differs."""
    compared = evidence.compared
    if compared and all(run["rule"] != "none" for run in compared):
        with phases.timed("claims"):
            evidence.claims = compare_claims(
                root, record, reruns_of(compared), exact=all(run["rule"] == "exact" for run in compared)
            )
        for line in evidence.claims.differ:
            say(f"claim differs: {line}")
