"""Ctrl-C in the command's first moments, while ``import peftlab`` and the CLI are still importing (the
registry of methods, ``importlib.metadata`` for the plugins, argparse): peftlab's one line and exit
status 130, never a KeyboardInterrupt traceback, whichever way the command is started.

The moments are taken from what the process imports, not from the clock: a ``sitecustomize`` on the
path sends the process a SIGINT when a given module is first looked for, so a slow or busy machine
moves them with it (tests/study/test_early_interrupt.py does the same for a study's workers)."""

import os
import subprocess
import sys

import pytest
from testkit import REPO

CTRL_C_WHEN_IMPORTED = """
import os, signal, sys, time

class CtrlC:
    fired = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == os.environ["CTRL_C_AT"] and not cls.fired:
            cls.fired = True
            os.kill(os.getpid(), getattr(signal, os.environ.get("CTRL_C_SIGNAL", "SIGINT")))  # as a terminal sends it
            time.sleep(0.2)  # where Python raises a KeyboardInterrupt if nothing holds it back
        return None

sys.meta_path.insert(0, CtrlC)
"""
# The console script pip writes for ``peftlab = "peftlab.cli:main"``
CONSOLE_SCRIPT = """import re
import sys
from peftlab.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""
LINE = "peftlab: interrupted (SIGINT); run the same command again to resume"
STARTS = {
    "script": lambda tmp: [str(tmp / "bin" / "peftlab")],
    "-m peftlab": lambda tmp: ["-m", "peftlab"],
    "-m peftlab.cli": lambda tmp: ["-m", "peftlab.cli"],
}


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize(
    "module",
    [
        "importlib.metadata",  # the plugins' finder, imported by peftlab/__init__ once (CI's traceback)
        "peftlab.config.sections",  # the registry of methods
        "peftlab.tuners.lora.config",
        "peftlab.cli",  # the command's package, after peftlab's
        "argparse",
        "peftlab.cli.run",  # the commands, once main has begun
    ],
)
def test_ctrl_c_while_peftlab_imports_is_one_line(tmp_path, start, module):
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(CTRL_C_WHEN_IMPORTED)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "peftlab").write_text(CONSOLE_SCRIPT)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp_path / "hook"), str(REPO / "src")]),
        CTRL_C_AT=module,
    )
    proc = subprocess.run(
        [sys.executable, *STARTS[start](tmp_path), "methods"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stderr.splitlines() == [LINE], proc.stderr
    assert proc.returncode == 130 and proc.stdout == ""


def test_sigterm_while_peftlab_imports_is_one_line_too(tmp_path):
    """Slurm's warning before it kills: held as Ctrl-C is, until the command takes it."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(CTRL_C_WHEN_IMPORTED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "hook"), str(REPO / "src")]))
    env.update(CTRL_C_AT="peftlab.config.sections", CTRL_C_SIGNAL="SIGTERM")
    proc = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "methods"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stderr.splitlines() == [LINE.replace("SIGINT", "SIGTERM")], proc.stderr
    assert proc.returncode == 128 + 15


@pytest.mark.parametrize(
    "argv, command",
    [
        (["python", "-m", "peftlab.cli", "study"], True),
        (["python", "-X", "importtime", "-mpeftlab", "train"], True),
        (["/venv/bin/python", "/venv/bin/peftlab", "train"], True),
        (["python", "-c", "import peftlab"], False),
        (["python", "-m", "pytest", "tests"], False),
        (["python", "-m", "peftlab.study.executors.worker"], False),
        (["python", "script.py"], False),
        (["python"], False),
    ],
)
def test_the_command_is_told_from_other_processes_by_its_command_line(argv, command):
    from peftlab.utils.startup import started_as_the_command

    assert started_as_the_command(argv) is command


def test_without_ctrl_c_the_command_answers_and_a_library_import_is_interruptible(tmp_path):
    """The hold is the command's: ``methods`` answers as always, and ``import peftlab`` in someone's
    script takes a Ctrl-C at once, as a KeyboardInterrupt there."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "methods"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "lora" in proc.stdout, proc.stderr
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(CTRL_C_WHEN_IMPORTED)
    code = "try:\n    import peftlab\nexcept KeyboardInterrupt:\n    print('interrupted at once')\n"
    env = dict(env, PYTHONPATH=os.pathsep.join([str(tmp_path / "hook"), str(REPO / "src")]))
    env["CTRL_C_AT"] = "peftlab.config.sections"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout == "interrupted at once\n", proc.stdout + proc.stderr
