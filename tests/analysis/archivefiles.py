"""The image-folder study packed as a submission (docs/reproduce.md), as test_reproduce.py, test_reproduce_hostile.py
and test_reproduce_received.py receive it: two configurations, LoRA and a plugin method of the test's own
(tests/plugin_example installed into a folder of the test), two seeds each, on an image folder the test writes;
``study``, ``paper --no-compile`` and ``submission`` (on a PATH without LaTeX: the paper packed without main.pdf),
each in a process of its own with the plugin on its path. conftest.py builds it once per pytest process (the
``archive`` fixture): the tests read it, and a test that changes it changes its own copy (``unpacked``)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml
from testkit import REPO, TINY_MODEL, extract_all

sys.path.insert(0, str(REPO / "tests" / "data"))  # datafiles, as the tests of tests/data import it
from datafiles import write_image_folder

NAME = "pets-submission"
EXAMPLE = REPO / "tests" / "plugin_example"


def install_example(site: Path) -> None:
    """tests/plugin_example as ``pip install --target`` lays it out: its package beside its dist-info."""
    shutil.copytree(EXAMPLE / "peftlab_mlpbias", site / "peftlab_mlpbias", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "peftlab_mlpbias-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: peftlab-mlpbias\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[peftlab.methods]\nmlp_bias = peftlab_mlpbias:METHOD\n")


def peftlab(*args: str, cwd: Path, plugin_site: Path | None = None, timeout: int = 900, env: dict | None = None):
    """``python -m peftlab ARGS`` in a subprocess from ``cwd``; the plugin importable only with ``plugin_site``;
    ``env``: variables set beside the environment's."""
    path = [str(REPO / "src")] + ([str(plugin_site)] if plugin_site else [])
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(path))
    return subprocess.run(
        [sys.executable, "-m", "peftlab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclasses.dataclass
class Here:
    """``peftlab``'s answer run in this process (``here``), as a CompletedProcess gives it, and what it left here."""

    returncode: int
    stdout: str
    stderr: str
    left: list[str]  # a path entry, PYTHONPATH or a plugin it added, a module it imported from a watched folder


class Hang(BaseException):  # not an Exception: no ``except Exception`` of the command's can turn it into a line
    pass


def here(*args: str, cwd: Path, env: dict | None = None, watch: Path | None = None, cpu_s: float = 120) -> Here:
    """``peftlab ARGS`` in this process through ``cli.run_command`` from ``cwd``, ``env`` set beside the environment:
    for a test of what reproduce checks or refuses, where no code of the archive may run and no process is tested.
    Afterwards the environment, ``sys.path``, the plugins read and the SIGTERM handler are as before; what the command
    added to them (and any module it imported from under ``watch``) is named in ``left``. An exception is its
    traceback on stderr and status 1, as a process would end; more than ``cpu_s`` CPU seconds, or 600 s of waiting,
    raises ``Hang``."""
    import traceback

    from peftlab import cli
    from peftlab.tuners.plugins import LOADED

    environ, path, loaded, modules = dict(os.environ), list(sys.path), dict(LOADED), set(sys.modules)
    out, err = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGPROF)}

    def hang(signum, frame):
        raise Hang(f"peftlab {' '.join(args)}: past {cpu_s} CPU s or 600 s")

    signal.signal(signal.SIGALRM, hang)
    signal.signal(signal.SIGPROF, hang)
    signal.setitimer(signal.ITIMER_PROF, cpu_s)  # CPU time: load from other processes does not count
    signal.alarm(600)
    os.environ.update(env or {})
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.run_command(list(args))
            except SystemExit as done:
                status = 0 if done.code is None else done.code
            except Exception:
                traceback.print_exc()
                status = 1
    finally:
        signal.alarm(0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        left = [f"sys.path {entry}" for entry in sys.path if entry not in path]
        if os.environ.get("PYTHONPATH") != environ.get("PYTHONPATH"):
            left.append(f"PYTHONPATH {os.environ.get('PYTHONPATH')}")
        left += [
            f"plugin {name}" for name, spec in LOADED.items() if name not in loaded and not isinstance(spec, Exception)
        ]
        for name in set(sys.modules) - modules:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if watch is not None and Path(file).is_relative_to(watch):
                left.append(f"module {name} from {file}")
                del sys.modules[name]
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path
        LOADED.clear()
        LOADED.update(loaded)
    return Here(status, out.getvalue(), err.getvalue(), left)


def write_study(top: Path) -> Path:
    """The study's folder (configs, data outside it, the plugin's site): returns the study file."""
    write_image_folder(top / "data" / "pets", per_class=6, split=True)
    (top / "site").mkdir()
    install_example(top / "site")
    configs = top / "work" / "configs"
    configs.mkdir(parents=True)
    base = {
        "name": "pets",
        "model": {**TINY_MODEL, "pretrained": "none"},
        "data": {"name": "imagefolder", "root": "../../data/pets", "val_fraction": 0.2},
        "method": {"name": "lora", "r": 2},
        "train": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 8, "reproducible": True, "eval_every": 4},
    }
    (configs / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"name": "pets", "base": "base.yaml", "seeds": 2, "methods": {"lora": {}, "mlp_bias": {"set": {}}}}
    (configs / "study.yaml").write_text(yaml.safe_dump(study))
    return configs / "study.yaml"


def without_latex(folder: Path) -> dict:
    """The environment of a machine without LaTeX (PATH: ``folder``, holding git alone), where ``submission`` packs a
    paper written with ``--no-compile`` without main.pdf, as archive.json's paper_pdf says. Where LaTeX and poppler
    are installed, reproduce finds a packed main.pdf that is no PDF they can read a difference, so the archives the
    tests check pack no stand-in PDF; compiling a real one would cost each archive a compile of the paper."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "git").symlink_to(shutil.which("git"))
    return {"PATH": str(folder)}


def paper_and_pack(work: Path, study_dir: str, top: Path) -> Path:
    """The paper of the study trained in ``work``/``study_dir`` (``--no-compile``) and its submission, packed on a
    PATH without LaTeX (``without_latex`` in ``top``/bin), each in this process: the archive's path."""
    paper = here("paper", study_dir, "--no-compile", cwd=work)
    assert paper.returncode == 0, paper.stderr[-2000:]
    packed = here("submission", study_dir, "--study", "configs/study.yaml", cwd=work, env=without_latex(top / "bin"))
    assert packed.returncode == 0, packed.stderr[-2000:]
    return work / study_dir / f"{Path(study_dir).name}-submission.tar.gz"


def make_archive(top: Path) -> Path:
    """The submission archive of the study, trained, reported and packed in ``top``."""
    study = write_study(top)
    work, site = top / "work", top / "site"
    ran = peftlab("study", str(study), "--study-dir", "runs/pets", "--quiet", cwd=work, plugin_site=site)
    assert ran.returncode == 0, ran.stderr[-2000:]
    paper = peftlab("paper", "runs/pets", "--no-compile", cwd=work, plugin_site=site)
    assert paper.returncode == 0, paper.stderr[-2000:]
    env = without_latex(top / "bin")
    packed = peftlab("submission", "runs/pets", "--study", "configs/study.yaml", cwd=work, plugin_site=site, env=env)
    assert packed.returncode == 0, packed.stderr[-2000:]
    return work / "runs" / "pets" / f"{NAME}.tar.gz"


def unpacked(archive: Path, where: Path) -> Path:
    """The archive unpacked in ``where``, the study's data put where REPRODUCE.md says."""
    with tarfile.open(archive) as tar:
        extract_all(tar, where)
    root = where / NAME
    shutil.copytree(archive.parents[3] / "data" / "pets", root / "data" / "pets")
    return root
