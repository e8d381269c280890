"""REPRODUCE.md of a submission: the steps in order, the commands as they ran (shell-quoted), the plugins, where
the data goes, the measured run times, what ``peftlab reproduce`` cannot check; every recorded word through the
Markdown escapers. It is made from the archive alone (its packed runs, archive.json and paper/results.tex), so that
reproduce makes it again and compares it: what it says that no packed file holds (the commit that packed it, the
commands that ran the study, the paths they were given, whether the base was found trained) archive.json records in
``made`` (``made_record``, at packing), each command a list of shell words as ``shlex.quote`` writes them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from peftlab.analysis.archive.datasets import data_command
from peftlab.analysis.archive.supplied import SUPPLIED_RECORD, SUPPLIED_SUMS
from peftlab.analysis.paper.macros import TOP1
from peftlab.analysis.results.escape import markdown_block, markdown_code, markdown_text
from peftlab.analysis.results.load import environment, load_results
from peftlab.analysis.results.portable import portable_text
from peftlab.analysis.stats.intervals import completed_runs

PATH_WORDS = (
    "Paths are written relative to where you will have them: `./` is the repository's root, `STUDY` the study "
    "folder (`--study-dir`), `~` your home folder; `OUTSIDE/<name>` was a file or folder elsewhere on the machine "
    "of the runs (a dataset: see below; a study file: `configs/` in this archive)."
)


def plugin_lines(done) -> list[str]:
    """The plugin methods the runs trained (provenance.plugin): the package and the hash of its code each run's id
    holds, to install before the study's command; without that code, those runs are other runs."""
    if "provenance.plugin" not in done:
        return []
    plugins = done.dropna(subset=["provenance.plugin"])
    if plugins.empty:
        return []
    lines = [
        "## Plugin methods",
        "",
        "These methods are not peftlab's: install each package as it was (its code's SHA-256 is part of its runs' "
        "ids, so another version of it trains other runs) before the commands above.",
        "",
    ]
    for method, runs in plugins.groupby("method", sort=False):
        lines.append(
            f"- {markdown_code(method)}: {markdown_text('; '.join(sorted(runs['provenance.plugin'].unique())))}"
        )
    return lines + [""]


def data_lines(done, study_dir: Path) -> list[str]:
    """REPRODUCE.md's section on the data: each dataset the completed runs read, where their configs say it lies
    (data.root, made portable), and its splits' sizes."""
    if done.empty or "config.data.name" not in done:
        return []
    lines = [
        "## Where the data goes",
        "",
        "Each dataset the runs read, and the folder their configs name for it (`data.root`; a relative root is "
        "read from the folder of the config that names it). Put the data there, or keep it in a folder of your own "
        "and give `peftlab reproduce --data DIR` (`DIR/<name>` for each; the configs stay as packed, which the "
        "integrity check needs); the runs' files record each data file's SHA-256 (`provenance.data_sha256`).",
        "",
    ]
    roots = done.get("config.data.root")
    for name in dict.fromkeys(done["config.data.name"].dropna()):
        runs = done[done["config.data.name"] == name]
        named = roots[runs.index].dropna() if roots is not None else []
        where = sorted({portable_text(str(root), study_dir) for root in named if root})
        sizes = [
            f"{split} {int(runs[f'data.{split}_size'].dropna().iloc[0])}"
            for split in ("train", "val", "test")
            if f"data.{split}_size" in runs and runs[f"data.{split}_size"].notna().any()
        ]
        folders = ", ".join(markdown_code(folder) for folder in where) or "not set (the dataset's own default)"
        lines.append(
            f"- {markdown_code(name)}: data.root {folders}" + (f"; examples read: {', '.join(sizes)}" if sizes else "")
        )
    return lines + [""]


def command_lines(commands: list[dict]) -> list[str]:
    """REPRODUCE.md's list of every command that ran the study (``made_commands``: shell words, paths portable)."""
    if not commands:
        return []
    lines = [
        f"The {'command' if len(commands) == 1 else f'{len(commands)} commands'} that ran the study's runs "
        "(commands.jsonl), each from the folder named before it:",
        "",
    ]
    shell = []
    for command in commands:
        line, where = " ".join(command["argv"]), command.get("cwd")
        if where is not None and not where.startswith(("OUTSIDE", "'OUTSIDE")):
            shell.append(f"cd {where} && {line}")
        elif where is not None:
            shell.append(f"{line}  # from a folder of the machine of the runs, outside the checkout and the study")
        else:
            shell.append(f"{line}  # from a folder the record does not name")
    return lines + markdown_block(shell, "bash") + [""]


def runtime_lines(done, record: dict, paper_minutes: str | None) -> list[str]:
    """REPRODUCE.md's expected runtime: the final runs, every phase (tuning trials included, archive.json's
    ``phases``), pretraining where the study pretrains, and the run time in all as the paper prints it (its
    \\studyWallMinutes)."""
    lines, wall = ["## Expected runtime", ""], done.get("timing.wall_seconds")
    if wall is not None and wall.notna().any():
        lines.append(
            f"- {len(done)} completed runs; wall time per run {wall.min():.0f} s to {wall.max():.0f} s "
            f"(mean {wall.mean():.0f} s); {wall.sum() / 60:.1f} min summed over the final runs, with one worker on "
            "the machine above, pretraining and tuning trials excluded."
        )
    by_phase, made = record.get("phases") or {}, record.get("made") or {}
    if by_phase:
        parts = ", ".join(
            f"{phase}: its base already trained"
            if phase == "pretrain" and made.get("pretrain_cached")
            else f"{phase} {seconds / 60:.1f} min"
            for phase, seconds in by_phase.items()
        )
        lines.append(
            f"- Every phase, as the calls of `peftlab study` measured it (phases.jsonl, wall time with their "
            f"workers): {parts}."
        )
    if paper_minutes:
        lines.append(f"- The runs' time in all, as the paper prints it (\\studyWallMinutes): {paper_minutes} min.")
    if record.get("base") and made.get("base_train_seconds") is not None:
        lines.append(
            f"- Pretraining the base model (cached after the first time): {made['base_train_seconds']:.0f} s of "
            "training."
        )
    return lines + ["- Compiling the paper: under a minute; installing the LaTeX packages (once): a few minutes."]


def superseded_lines(record: dict) -> list[str]:
    """REPRODUCE.md's note on the runs of another version of the study (archive.json's ``superseded``): named,
    left out of the archive, the tables and the paper's run time."""
    old = record.get("superseded") or []
    if not old:
        return []
    minutes = sum(run.get("seconds") or 0.0 for run in old) / 60
    names = ", ".join(markdown_code(run["run"]) for run in old)
    return [
        "## Superseded runs",
        "",
        f"The study folder held {len(old)} run{'s' if len(old) != 1 else ''} of another version of the study, which "
        f"its file no longer names: {names} ({minutes:.1f} min of run time). They are not in this archive, its "
        "tables or the paper's run time; the phases' wall times below include the calls that trained them.",
        "",
    ]


def paper_macro(paper_dir: Path, name: str) -> str | None:
    """The value results.tex gives the macro ``name`` (e.g. studyWallMinutes), or None."""
    path = paper_dir / "results.tex"
    text = path.read_text(errors="replace") if path.is_file() else ""
    found = re.search(rf"^\\newcommand\{{\\{name}\}}\{{([^{{}}]*)\}}", text, flags=re.MULTILINE)
    return found.group(1) if found else None


def steps_lines(record: dict, paper_minutes: str | None, unchecked: list[str]) -> list[str]:
    """REPRODUCE.md's steps in this archive's own folder, in order: the integrity check (before anything runs
    code), install, plugins, data, the files to supply, pretraining, the study, its report and paper, the check by
    ``peftlab reproduce``; each with the time the study measured where it did. ``unchecked``: what reproduce
    cannot check (``unchecked_files``)."""
    study, phases = record["study"], record.get("phases") or {}

    def took(phase: str) -> str:
        return (
            f" ({phase} took {phases[phase] / 60:.1f} min with the workers of the runs' machine)"
            if phase in phases
            else ""
        )

    def trained(seconds) -> str:  # the base's own run: the study's phase took no time where it found it trained
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return f" (its run took {seconds:.0f} s on the runs' machine)"
        return took("pretrain")

    steps = first_steps(record, unchecked) + [plugin_step(plugin) for plugin in record.get("plugins") or []]
    steps += data_steps(record)
    for entry in record.get(SUPPLIED_RECORD) or []:
        steps.append(
            f"A file you supply (the archive cannot pack it; {markdown_code(str(entry.get('field')))} names it): "
            f"put it at {markdown_code(entry['path'])} (SHA-256 {entry['sha256']}, {entry.get('bytes')} bytes); "
            f"`sha256sum -c {SUPPLIED_SUMS}` checks it, and `peftlab reproduce` does before anything runs."
        )
    base = record.get("base")
    if base:
        steps.append(
            f"Pretraining: the study's first phase trains the base with {markdown_code(base['pretrain'])} into "
            f"`base/`{trained(base.get('seconds'))}; its weights' SHA-256 was {markdown_code(str(base['sha256']))}."
        )
    steps.append(
        f"The study: `peftlab study {shlex.quote(study)} --study-dir rerun`{took('trials')}{took('final runs')}; "
        "`--dry-run` lists its runs first."
    )
    steps.append("The report and the paper: `peftlab report rerun`; `peftlab paper rerun`.")
    steps.append(
        "The check: `peftlab reproduce . --out ../reproduce-check"
        + (
            " --run-archive-code=HASH` (HASH: the archive code's SHA-256 that step 1's `--runs 0` prints)"
            if record.get("plugins")
            else "`"
        )
        + " checks the archive, then reruns one seed of "
        "every configuration, drawn from a seed it prints (`--sample-seed` draws the same again), and compares "
        "every metric with `results/runs/` (docs/reproduce.md); `--runs all` reruns every run and recomputes the "
        "paper's claims from them, `--trials` reruns the tuning searches; `--data DIR` reads each dataset from "
        "`DIR/<name>`"
        + (f"; the runs took {paper_minutes} min in all, as the paper prints it." if paper_minutes else ".")
    )
    return [
        "## Steps, from this archive's folder",
        "",
        "Every path below is inside this folder: the configs in `configs/` name their files there.",
        "",
        *(f"{n}. {step}" for n, step in enumerate(steps, 1)),
        "",
    ]


def first_steps(record: dict, unchecked: list[str]) -> list[str]:
    """REPRODUCE.md's first steps: the integrity check (what ``peftlab reproduce`` checks, and what it cannot:
    ``unchecked``), then the install."""
    repository = record.get("repository")
    return [
        "The integrity check, before anything runs code: `sha256sum -c SHA256SUMS` checks every packed file; "
        "`sha256sum results/runs.sha256` gives the paper's results hash (\\resultsSha in paper/results.tex). "
        "`peftlab reproduce . --runs 0` (once installed) checks the same, the files you supply and the data too, "
        "and makes every other file again from `results/runs/` and archive.json to compare it (the figures where "
        "matplotlib, pillow, numpy, pandas and scipy are environment.lock's versions; requirements.lock and "
        "configs/literature.yaml where the checkout's are the same); it cannot check "
        + "; ".join(markdown_text(line) for line in unchecked)
        + ": its verdict names them.",
        "Install peftlab at the commit above"
        + (
            f" from {markdown_code(repository)} (`git clone {shlex.quote(repository)}`)"
            if repository
            else " (no repository address was recorded: git knew no remote of the packing checkout)"
        )
        + " with its lock file (`pip install -r requirements.lock`, then `pip install -e <checkout>`); "
        "`environment.lock` lists every package of the machine of the runs.",
    ]


def plugin_step(plugin: dict) -> str:
    """REPRODUCE.md's step of a plugin: where its code is, and how reproduce lists it before it runs any."""
    return (
        f"Plugin {markdown_code(plugin['distribution'])} {markdown_text(plugin['version'])} (code SHA-256 "
        f"{markdown_code(plugin['code_sha256'])}): its installed files are in {markdown_code(plugin['folder'])}, "
        "code that runs when the study is read; read it first. `peftlab reproduce` imports it only with "
        "`--run-archive-code`: it lists every file it would put on the path, with its SHA-256 and size, in "
        "`OUT/plugin-code.txt` and prints that list's SHA-256; `--run-archive-code=HASH` with that hash runs "
        "exactly those files (their copy in `OUT/plugin-code/`, first on the path). To run the study yourself, "
        f"`export PYTHONPATH=$PWD/{shlex.quote(plugin['folder'])}`."
    )


def data_steps(record: dict) -> list[str]:
    """REPRODUCE.md's step for each dataset archive.json records: where it goes, how to obtain it, its files'
    SHA-256 as the runs recorded them."""
    steps = []
    for data in record.get("data") or []:
        if data.get("folder"):
            where = (
                f"put it in {markdown_code(data['folder'])}, or in `DIR/{markdown_text(Path(data['folder']).name)}` "
                "with `peftlab reproduce --data DIR`"
            )
        else:
            where = (
                "peftlab finds it by its name, or in "
                f"`DIR/{markdown_text(data['name'])}` with `peftlab reproduce --data DIR`"
            )
        made = data.get("made_by") and data.get("folder")
        how = (
            (made and f"{markdown_code(data_command(data['made_by'], data['folder']))} makes it")
            or DATA_HOW.get(data["name"])
            or (f"the runs read it from {markdown_code(data['was'])}" if data.get("was") else "")
        )
        files = ", ".join(f"{markdown_text(k)} {v[:12]}" for k, v in sorted(data.get("sha256", {}).items()))
        steps.append(
            f"Data {markdown_code(data['name'])}: {where}{'; ' + how if how else ''}"
            f"{'; its files (SHA-256, as the runs recorded them): ' + files if files else ''}."
        )
    return steps


# how to obtain a dataset peftlab makes or knows (``peftlab data ...``), by data.name
DATA_HOW = {
    "mnist": "peftlab's offline data (`make data` in the checkout) installs it",
    "fashion_mnist": "peftlab's offline data (`make data` in the checkout) installs it",
    "vtab_demo": "`peftlab data vtab-demo` makes it",
}


def reproduce_md(root: Path, record: dict, study_dir: Path) -> str:
    """REPRODUCE.md from the archive at ``root`` alone: its packed runs (``study_dir``, ``regenerate.study_folder``'s
    of them), archive.json (``record``, its ``made`` included) and paper/results.tex."""
    df = load_results(study_dir)
    done = completed_runs(df)
    env = environment(study_dir)
    versions, hardware = env.get("versions") or {}, env.get("hardware") or {}
    sha = str(env.get("git_sha") or "unknown")  # a received result.json's: any text
    made = record.get("made") or {}
    said = markdown_text  # what the runs recorded, in prose
    lines = [
        f"# Reproducing {said(record.get('name'))}",
        "",
        f"- Runs trained at git commit {markdown_code(sha)} (uncommitted changes: {said(env.get('git_dirty'))}); "
        f"this archive was packed at commit {markdown_code(str(made.get('packed_at')))}.",
        f"- Machine of the runs: {said(hardware.get('cpu'))}"
        f"{' (' + said(hardware['cpu_generation']) + ')' if hardware.get('cpu_generation') else ''}, "
        f"{said(hardware.get('cpu_count'))} CPUs, device "
        f"{said(hardware.get('device'))}{', GPU ' + said(hardware['gpu']) if hardware.get('gpu') else ''}; "
        f"{said(env.get('threads'))} {'thread' if env.get('threads') == 1 else 'threads'} per run; "
        f"precision {said(env.get('dtype'))}.",
        "- Packages: " + ", ".join(said(f"{k} {v}") for k, v in versions.items() if v) + " (all: requirements.lock).",
        "",
    ]
    paper_minutes = paper_macro(root / "paper", "studyWallMinutes")
    lines += steps_lines(record, paper_minutes, unchecked_files(root, record)) + superseded_lines(record)
    lines += commands_lines(record, sha)
    lines += plugin_lines(done) + command_lines(made.get("commands") or []) + data_lines(done, study_dir)
    lines += runtime_lines(done, record, paper_minutes)
    lines += expected_lines(df, done)
    lines += ["", "## Checking the files", "", "```bash", "sha256sum -c SHA256SUMS", "```", ""]
    return "\n".join(lines)


def unchecked_files(root: Path, record: dict) -> list[str]:
    """What ``peftlab reproduce`` names as not checked whatever machine it runs on (``regenerate.not_regenerable``,
    ``recorded.not_recorded``)."""
    from peftlab.analysis.archive.recorded import not_recorded
    from peftlab.analysis.archive.regenerate import not_regenerable

    return not_regenerable(root, record) + not_recorded(root, record)


def compare_reproduce_md(root: Path, record: dict, study_dir: Path, out) -> None:
    """REPRODUCE.md against the one the archive makes (``reproduce_md``), into ``out`` (``regenerate.Regenerated``);
    an archive whose archive.json records no ``made`` (packed before it did) has its REPRODUCE.md named as not
    checked."""
    from peftlab.analysis.archive.regenerate import compare_text

    if "made" not in record:
        out.skipped.append("REPRODUCE.md (archive.json records no `made`: packed by an older peftlab)")
        return
    compare_text(root, "REPRODUCE.md", reproduce_md(root, record, study_dir), out)


def commands_lines(record: dict, sha: str) -> list[str]:
    """REPRODUCE.md's commands that made the runs, the paper and the archive, from a clone at commit ``sha``, with
    the paths archive.json's ``made`` records (shell words)."""
    repository, shown = record.get("repository"), record["made"]["paths"]
    lines = [
        "## Commands",
        "",
        "How the runs were made, from a clone of the repository"
        + (f" ({markdown_code(repository)})" if repository else " (git recorded no address of it)")
        + " at that commit, on Debian with Python 3.11:",
        "",
    ]
    shell = [f"git checkout {shlex.quote(sha) if sha.isprintable() else 'unknown'}"]
    if shown["study"].endswith("configs/studies/default.yaml"):
        lines += markdown_block(
            shell
            + [
                "make study        # trains the runs (reuses finished ones, resumes an interrupted one)",
                "make paper        # figures, tables, results.tex, main.tex, main.pdf",
                "make submission   # this archive",
            ],
            "bash",
        )
        lines += [
            "",
            "`make` creates `.venv` with requirements.lock, installs the offline data (`make data`) and, when apt "
            "may be used, the LaTeX packages (scripts/install-latex.sh). The same steps without make:",
            "",
        ]
        shell = []
    lines += markdown_block(
        shell
        + [
            f".venv/bin/peftlab study {shown['study']} --study-dir {shown['dir']} --report",
            f".venv/bin/peftlab paper {shown['dir']} --out {shown['paper']}",
            f".venv/bin/peftlab submission {shown['dir']} --study {shown['study']} --paper {shown['paper']} "
            f"--out {shown['out']}",
        ],
        "bash",
    )
    lines += ["", PATH_WORDS, ""]
    return lines


def expected_lines(df, done) -> list[str]:
    """REPRODUCE.md's expected results: test top-1 per configuration over its completed runs (``done`` of ``df``)."""
    lines = [
        "",
        "## Expected results",
        "",
        "Test top-1 (%) per configuration over seeds; the same seeds on the same machine give the same numbers.",
        "",
        "| configuration | runs | mean | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, runs in done.groupby("variant", sort=False):
        top1 = 100 * runs[TOP1]
        lines.append(
            f"| {markdown_text(variant)} | {len(runs)} | {top1.mean():.1f} | {top1.min():.1f} | {top1.max():.1f} |"
        )
    not_done = len(df) - len(done)
    if not_done:
        lines += ["", f"{not_done} runs did not complete (see results/results.csv, columns status and error)."]
    return lines
