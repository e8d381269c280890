"""Shell completion (issue 72, item 3): ``peftlab`` answers argcomplete's protocol in a subprocess, as a shell's
completion function calls it, and the script ``peftlab completion SHELL`` prints completes in the shell itself.

argcomplete's protocol: the shell runs the command with ``_ARGCOMPLETE=1``, the line in ``COMP_LINE`` and the
cursor in ``COMP_POINT``; the command writes the candidates, separated by ``_ARGCOMPLETE_IFS``, to file
descriptor 8 or to the file ``_ARGCOMPLETE_STDOUT_FILENAME`` names, and exits 0.
"""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
from testkit import REPO, run_python


def environment(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), **extra}


def complete(line: str, tmp_path, cwd=None) -> list[str]:
    """The candidates ``peftlab`` gives for ``line`` with the cursor at its end (argcomplete's protocol)."""
    out = tmp_path / "candidates"
    env = environment(
        _ARGCOMPLETE="1",
        _ARGCOMPLETE_IFS="\n",
        _ARGCOMPLETE_STDOUT_FILENAME=str(out),
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
    )
    env.pop("_ARGCOMPLETE_SUPPRESS_SPACE", None)
    done = subprocess.run(
        [sys.executable, "-m", "peftlab", *shlex.split(line)[1:]],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.exists(), f"no completion written; stderr: {done.stderr[-2000:]}"
    return [word.strip() for word in out.read_text().split("\n") if word.strip()]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("peftlab tr", {"train"}),
        ("peftlab study --wor", {"--workers"}),
        ("peftlab train x.yaml train.l", {"train.lr=", "train.label_smoothing=", "train.log_every="}),
        # overrides after an option, as cli.parsing takes them
        ("peftlab train x.yaml --run-dir d train.l", {"train.lr=", "train.label_smoothing=", "train.log_every="}),
        ("peftlab validate x.yaml method.name=lo", {"method.name=lora", "method.name=loha", "method.name=lokr"}),
        ("peftlab train x.yaml train.precision=", {f"train.precision={v}" for v in ("auto", "fp32", "bf16", "fp16")}),
        ("peftlab study s.yaml --executor ", {"local", "submitit", "ray"}),
        ("peftlab completion ", {"bash", "zsh", "fish"}),
    ],
)
def test_a_completion_request_is_answered(line, expected, tmp_path):
    assert expected <= set(complete(line, tmp_path)), line


def test_config_arguments_complete_as_yaml_files(tmp_path):
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (work / "run.yaml").write_text("{}\n")
    (work / "notes.txt").write_text("")
    assert set(complete("peftlab train ", tmp_path, cwd=work)) == {"run.yaml", "runs/"}
    assert set(complete("peftlab study ", tmp_path, cwd=work)) == {"run.yaml", "runs/"}
    assert set(complete("peftlab export ", tmp_path, cwd=work)) == {"runs/"}


def test_only_a_completion_request_imports_argcomplete(tmp_path):
    """A plain command pays nothing for completion: argcomplete is imported when a shell asks, not before."""
    code = (
        "import sys\nfrom peftlab.cli import main\nstatus = main(['methods'])\n"
        "print('argcomplete' in sys.modules, status)"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False 0"
    assert "train" in complete("peftlab tr", tmp_path)


@pytest.fixture
def peftlab_on_path(tmp_path):
    """A ``peftlab`` on PATH that runs this checkout's code, as the console script runs the installed one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "peftlab"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m peftlab "$@"\n')
    script.chmod(0o755)
    return environment(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def completion_script(shell: str, env: dict) -> str:
    done = subprocess.run(["peftlab", "completion", shell], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


BASH_CASES = [
    ("peftlab tr", ["train"]),
    ("peftlab study --wor", ["--workers"]),
    ("peftlab train x.yaml train.lr", ["train.lr="]),
]


@pytest.mark.parametrize("line, expected", BASH_CASES)
def test_bash_completes_through_the_script(line, expected, peftlab_on_path, tmp_path):
    """bash sources ``peftlab completion bash``, is given the line as readline gives it (COMP_WORDS,
    COMP_CWORD, COMP_LINE, COMP_POINT) and calls the completion function ``complete -p`` registered."""
    script = tmp_path / "peftlab.bash"
    script.write_text(completion_script("bash", peftlab_on_path))
    words = line.split(" ")
    driver = (
        f"source {shlex.quote(str(script))}\n"
        "function=$(complete -p peftlab | sed -E 's/.*-F ([^ ]+) .*/\\1/')\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={shlex.quote(line)}\n"
        f"COMP_POINT={len(line)}\n"
        f'"$function" peftlab {shlex.quote(words[-1])} {shlex.quote(words[-2])}\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", driver], env=peftlab_on_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [w.strip() for w in done.stdout.splitlines() if w.strip()] == expected, done.stderr[-2000:]


def test_zsh_completes_through_the_script(peftlab_on_path, tmp_path):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed here (the script is bash's, which zsh runs through compdef)")
    script = tmp_path / "peftlab.zsh"
    script.write_text(completion_script("zsh", peftlab_on_path))
    # _describe is the completion system's; replaced, it shows what the function hands it
    driver = (
        "autoload -U compinit && compinit -u\n"
        f"source {shlex.quote(str(script))}\n"
        '_describe() { print -l -- "${(@P)2}"; }\n'
        "BUFFER='peftlab study --wor'; CURSOR=${#BUFFER}; words=(peftlab study --wor)\n"
        "_python_argcomplete\n"
    )
    done = subprocess.run(["zsh", "-c", driver], env=peftlab_on_path, capture_output=True, text=True, timeout=120)
    assert "--workers" in done.stdout, done.stderr[-2000:]


def test_fish_completes_through_the_script(peftlab_on_path, tmp_path):
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed here")
    script = tmp_path / "peftlab.fish"
    script.write_text(completion_script("fish", peftlab_on_path))
    driver = f"source {shlex.quote(str(script))}; complete -C 'peftlab study --wor'"
    done = subprocess.run(["fish", "-c", driver], env=peftlab_on_path, capture_output=True, text=True, timeout=120)
    assert "--workers" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("shell, registers", [("bash", "complete "), ("zsh", "compdef "), ("fish", "complete ")])
def test_the_script_names_the_command(shell, registers, peftlab_on_path):
    script = completion_script(shell, peftlab_on_path)
    assert registers in script and "peftlab" in script


def test_a_file_name_with_a_newline_or_an_escape_completes_as_one_quoted_word(peftlab_on_path, tmp_path):
    """A file named with a newline is one candidate, not two, and one holding an escape sequence reaches the shell
    as its code, not raw (issue 78): each as an ANSI-C quoted word ($'a\\nb.yaml') that bash reads back as the
    name; the shell's completion function gets them as the plain names are got."""
    work = tmp_path / "work"
    work.mkdir()
    names = ["a\nb.yaml", "x\x1b[2Jy.yaml", "r\u202eight.yaml", "plain.yaml"]
    for name in names:
        (work / name).write_text("{}\n")
    script = tmp_path / "peftlab.bash"
    script.write_text(completion_script("bash", peftlab_on_path))
    driver = (
        f"source {shlex.quote(str(script))}\n"
        "function=$(complete -p peftlab | sed -E 's/.*-F ([^ ]+) .*/\\1/')\n"
        "COMP_WORDS=(peftlab train ''); COMP_CWORD=2; COMP_LINE='peftlab train '; COMP_POINT=14\n"
        '"$function" peftlab "" train\n'
        'for word in "${COMPREPLY[@]}"; do printf "%s\\0" "$word"; done\n'
    )
    done = subprocess.run(
        ["bash", "-c", driver], env=peftlab_on_path, cwd=work, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    words = [w.strip() for w in done.stdout.split("\0") if w.strip()]
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    assert sorted(words) == sorted(["$'a\\nb.yaml'", "$'x\\x1b[2Jy.yaml'", "$'r\\u202eight.yaml'", "plain.yaml"])
    for word, name in (
        ("$'a\\nb.yaml'", names[0]),
        ("$'x\\x1b[2Jy.yaml'", names[1]),
        ("$'r\\u202eight.yaml'", names[2]),
    ):
        echoed = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, text=True, timeout=60)
        assert echoed.stdout == name  # the shell reads the word back as the file's name


def test_zsh_gets_a_file_name_with_a_newline_as_one_candidate(peftlab_on_path, tmp_path):
    """zsh's ``_describe`` quotes what it inserts and lists a control character as ^[: it gets the name as it is,
    one candidate (``word:description``), never split at its newline."""
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed here")
    work = tmp_path / "work"
    work.mkdir()
    names = ["a\nb.yaml", "x\x1b[2Jy.yaml", "plain.yaml"]
    for name in names:
        (work / name).write_text("{}\n")
    script = tmp_path / "peftlab.zsh"
    script.write_text(completion_script("zsh", peftlab_on_path))
    driver = (
        "autoload -U compinit && compinit -u\n"
        f"source {shlex.quote(str(script))}\n"
        '_describe() { print -rN -- "${(@P)2}"; }\n'
        "BUFFER='peftlab train '; CURSOR=${#BUFFER}; words=(peftlab train '')\n"
        "_python_argcomplete\n"
    )
    done = subprocess.run(
        ["zsh", "-c", driver], env=peftlab_on_path, cwd=work, capture_output=True, text=True, timeout=120
    )
    assert sorted(w for w in done.stdout.split("\0") if w) == sorted(f"{name}:" for name in names), done.stderr
