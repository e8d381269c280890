"""``peftlab reproduce``'s verdicts, in the words an artifact committee uses, each said only where every part of it
was compared (STYLE.md 21):

1. **archive intact**: the files against SHA256SUMS, the results hash, the supplied files, every dataset (by name
   too), the plugins' code, and every other packed file made again from ``results/runs/`` and archive.json and
   compared (``regenerate``, ``recorded``); what nothing packed makes again is named in the same line ("not
   checked: paper/main.pdf, ...");
2. **runs reproduced**: the rerun runs (a sample drawn by ``rerun.draw``, or all), each exact within the runs' machine
   class, else within the stated tolerance;
3. **claims reproduced**: with every completed run rerun (``--runs all``), the paper's claims recomputed from them
   and compared (``claims``).

A level is reached only with the ones below it. ``--runs 0`` can say only the first; the last line never calls a
check that reran nothing "reproduced". ``closing_record`` is what reproduce.json adds: this machine and its
versions beside the runs', peftlab's commit, each phase's time, every hash that was checked, the sample's seed and
the level reached.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

LEVELS = ("archive intact", "runs reproduced", "claims reproduced")


@dataclass
class Phases:
    """Each phase's wall time, in the order they ran (seconds)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def text(self) -> str:
        return ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items())


@dataclass
class Evidence:
    """What each level compared, for its line and reproduce.json."""

    archive: list[str] = field(default_factory=list)  # the archive level's differences
    not_checked: list[str] = field(default_factory=list)  # parts of the archive level not compared (absent data)
    unchecked: list[str] = field(default_factory=list)  # files nothing packed makes again, each "name (why)"
    checked: dict = field(default_factory=dict)  # what was found as recorded, with its hash
    runs_total: int = 0  # completed archived runs
    compared: list[dict] = field(default_factory=list)  # rerun.compare_runs' records
    run_differences: list[str] = field(default_factory=list)
    sample: str = ""  # how the reruns were chosen ("drawn with sample seed N", "all")
    tuned: bool = False  # whether the study's choices came from tuning searches
    trials: list[str] | None = None  # the choices found equal where the searches were rerun (--trials)
    trial_differences: list[str] = field(default_factory=list)
    trial_notes: list[str] = field(default_factory=list)  # choices that moved on another machine class
    stopped: bool = False  # reruns were asked for and the checks' differences stopped them
    claims: object | None = None  # claims.Claims, where every run was rerun


def tuning_said(e: Evidence) -> str:
    """How the rerun searches chose: "6 of 6 choices as archived" (a choice that moved on another class counted)."""
    moved = len(e.trial_differences) + len(e.trial_notes)
    same = len(e.trials or [])
    return f"{same} of {same + moved} {'choice' if same + moved == 1 else 'choices'} as archived"


def verdict_lines(evidence: Evidence) -> tuple[list[str], int, bool]:
    """(the closing lines, the level reached 0..3, whether nothing differs). The last line is the verdict."""
    e = evidence
    lines, level = [], 0
    differences = e.archive + e.run_differences + e.trial_differences + (e.claims.differ if e.claims else [])
    checked = archive_parts(e.checked)
    if e.archive:
        lines.append(f"archive intact: no, {count(len(e.archive), 'difference')} (the `differs:` lines above)")
    elif e.not_checked:
        lines.append(f"archive intact: not said: {'; '.join(e.not_checked)} (checked: {checked}{unchecked_said(e)})")
    else:
        lines.append(f"archive intact: yes ({checked}{unchecked_said(e)})")
        level = 1
    rerun = len(e.compared)
    if not rerun and e.run_differences:  # the reruns stopped before any was compared (the archive's code raised)
        lines.append(f"runs reproduced: no, no run compared: {e.run_differences[0]}")
    elif not rerun:
        why = "the checks' differences stopped the reruns" if e.stopped else "--runs 0 checks the archive only"
        lines.append(f"runs reproduced: not checked (no run rerun: {why})")
    else:
        exact = sum(1 for run in e.compared if run.get("rule") == "exact")
        said = f"{rerun} of {e.runs_total} runs rerun ({e.sample}), {exact} exact, {rerun - exact} by the tolerance"
        tuning = ""
        if e.tuned:
            tuning = (
                f"; the tuning searches rerun, {tuning_said(e)}"
                if e.trials is not None
                else "; the tuning taken as recorded (--trials reruns its searches)"
            )
        if e.run_differences or e.trial_differences:
            lines.append(f"runs reproduced: no, {said}{tuning}")
        else:
            lines.append(
                f"runs reproduced: {'yes' if level == 1 else 'yes, but the archive is not intact'}, {said}{tuning}"
            )
            level = 2 if level == 1 else level
    if e.claims is None:
        why = "every run rerun (--runs all)" if rerun else "reruns"
        lines.append(f"claims reproduced: not checked (recomputing the paper's claims needs {why})")
    elif e.claims.differ:
        lines.append(f"claims reproduced: no, {count(len(e.claims.differ), 'claim')} not as the paper says")
    else:
        lines.append(f"claims reproduced: yes ({e.claims.rule}): {', '.join(e.claims.held)}")
        level = 3 if level == 2 else level
    lines.append(last_line(differences, level, e.not_checked))
    return lines, level, not differences


def archive_parts(checked: dict) -> str:
    parts = [f"{checked.get('files', 0)} files against SHA256SUMS", "the results hash"]
    for key, noun in (("supplied", "supplied file"), ("data", "dataset"), ("plugins", "plugin")):
        if checked.get(key):
            parts.append(count(len(checked[key]), noun))
    if checked.get("regenerated"):
        parts.append(f"{count(len(checked['regenerated']), 'file')} made again from results/runs and archive.json")
    return ", ".join(parts)


def unchecked_said(evidence: Evidence) -> str:
    """The verdict's "; not checked: ..." naming what nothing packed makes again (reproduce.json says why)."""
    if not evidence.unchecked:
        return ""
    return f"; not checked: {', '.join(item.split(' (')[0] for item in evidence.unchecked)}"


def last_line(differences: list[str], level: int, not_checked: list[str]) -> str:
    """The verdict: the differences, else the level reached and what is not said."""
    if differences:
        return f"not reproduced: {count(len(differences), 'difference')}: " + (
            "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
        )
    if level == 0:
        return f"no verdict: nothing checked differs, but {'; '.join(not_checked)}"
    said = "; ".join(LEVELS[:level]) + ("" if level == 3 else f"; not said: {', '.join(LEVELS[level:])}")
    return f"{LEVELS[level - 1]}: level {level} of 3 ({said})"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def machine_here() -> dict:
    """This machine as the runs' records name theirs (torch-free): the CPU, its vendor and flags, the versions of
    the packages that move numbers, and peftlab's commit."""
    from peftlab.analysis.results.record import NUMERIC_PACKAGES
    from peftlab.utils.provenance import cpu_flags, cpu_model, cpu_vendor, git_state, package_versions

    versions = package_versions()
    sha, dirty = git_state()
    return {
        "cpu": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "cpu_flags": cpu_flags(),
        "versions": {name: versions.get(name) for name in NUMERIC_PACKAGES},
        "peftlab_commit": sha,
        "peftlab_dirty": dirty,
    }


def closing_record(evidence: Evidence, record: dict, phases: Phases, seed: int | None, level: int) -> dict:
    """What reproduce.json adds to what reproduce records: the machines, the phases, the checked hashes."""
    from peftlab.analysis.results.record import machine_class

    here = machine_here()
    runs_env = record.get("environment") or {}
    reran = [run.get("machine_class") for run in evidence.compared if run.get("machine_class")]
    return {
        "machine": {
            "here": here,
            "rerun_class": reran[0] if reran else None,
            "runs": {
                "versions": runs_env.get("versions"),
                "hardware": runs_env.get("hardware"),
                "arithmetic": runs_env.get("arithmetic"),
                "threads": runs_env.get("threads"),
                "git_sha": runs_env.get("git_sha"),
            },
            "runs_class": machine_class({"provenance": runs_env}) if runs_env else None,
        },
        "phases_seconds": {phase: round(seconds, 3) for phase, seconds in phases.seconds.items()},
        "checked": evidence.checked,
        "sample_seed": seed,
        "level": level,
        "level_name": LEVELS[level - 1] if level else None,
        "tuning": "rerun" if evidence.trials is not None else ("taken as recorded" if evidence.tuned else None),
        "claims": {"held": evidence.claims.held, "differ": evidence.claims.differ} if evidence.claims else None,
    }


def machine_lines(record: dict, evidence: Evidence, phases: Phases, seed: int | None) -> list[str]:
    """The lines before the verdicts: this machine and the runs', peftlab's commit, each phase's time, the seed."""
    here = machine_here()
    runs_env = record.get("environment") or {}
    versions = ", ".join(f"{k} {v}" for k, v in here["versions"].items() if v)
    theirs = {k: v for k, v in (runs_env.get("versions") or {}).items() if k in here["versions"]}
    same = [k for k, v in here["versions"].items() if v and theirs.get(k) == v]
    lines = [
        f"machine here: {here['cpu']} ({here['cpu_vendor']}), {versions}; peftlab {str(here['peftlab_commit'])[:12]}"
        + (" with uncommitted changes" if here["peftlab_dirty"] else ""),
        f"machine of the runs: {(runs_env.get('hardware') or {}).get('cpu')} "
        f"({(runs_env.get('arithmetic') or {}).get('cpu_vendor')}), "
        + ", ".join(f"{k} {v}" for k, v in theirs.items() if v)
        + f"; peftlab {str(runs_env.get('git_sha'))[:12]}; equal versions: {', '.join(same) or 'none'}",
    ]
    if seed is not None:
        lines.append(f"sample seed: {seed} (--sample-seed {seed} draws the same runs again)")
    lines.append(f"phases: {phases.text()}")
    return lines


def checked_record(root, record: dict, results_sha: str, found: dict, named, supplied, regenerated) -> dict:
    """What the archive level found as recorded, each with its hash: SHA256SUMS (its own SHA-256 and how many files
    it lists), the results hash, each supplied file, each dataset's files (a folder's as its check found them equal,
    one by name as hashed), each plugin's code, the files made again from the runs and archive.json
    (``regenerated``: what was compared, and what was not checked, with why)."""
    from peftlab.analysis.paper.latex import file_sha256

    sums = root / "SHA256SUMS"
    listed = sums.read_text(errors="replace").splitlines() if sums.is_file() else []
    data = {
        entry["folder"]: dict(entry.get("sha256") or {})
        for entry in record.get("data") or []
        if entry.get("folder") in found
    }
    data.update({f"{name} (by name, {named.found[name]})": files for name, files in named.checked.items()})
    return {
        "files": len(listed),
        "sha256sums": file_sha256(sums) if sums.is_file() else None,
        "results_sha256": results_sha,
        "supplied": dict(supplied.checked),
        "data": data,
        "plugins": {
            f"{plugin['distribution']} {plugin['version']}": plugin["code_sha256"]
            for plugin in record.get("plugins") or []
        },
        "regenerated": [f"{name}: {what}" for name, what in regenerated.compared.items()],
        "not_checked": list(regenerated.skipped),  # what nothing packed makes again, with why
    }


def reruns_of(compared: list[dict]) -> dict[str, dict]:
    """Each rerun's metrics by its archived run id, from ``rerun.compare_runs``' records (the metrics both
    records hold: [archived, rerun])."""
    return {
        run["archived_run"]: {"status": "completed", "metrics": {k: v[1] for k, v in run["metrics"].items()}}
        for run in compared
        if run.get("rule") != "none" and run.get("archived_run")
    }
