"""The image-folder study packed as a submission (docs/reproduce.md), as test_reproduce.py, test_reproduce_hostile.py
and test_reproduce_received.py receive it: two configurations, LoRA and a plugin method of the test's own
(tests/plugin_example installed into a folder of the test), two seeds each, on an image folder the test writes;
``study``, ``paper --no-compile`` (a stand-in main.pdf recorded as compiled) and ``submission``, each in a process of
its own with the plugin on its path. conftest.py builds it once per pytest process (the ``archive`` fixture): the
tests read it, and a test that changes it changes its own copy (``unpacked``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml
from testkit import REPO, TINY_MODEL

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


def make_archive(top: Path) -> Path:
    """The submission archive of the study, trained, reported and packed in ``top``."""
    from peftlab.analysis.paper.latex import record_pdf
    from peftlab.analysis.results.load import results_sha256

    study = write_study(top)
    work, site = top / "work", top / "site"
    ran = peftlab("study", str(study), "--study-dir", "runs/pets", "--quiet", cwd=work, plugin_site=site)
    assert ran.returncode == 0, ran.stderr[-2000:]
    paper = peftlab("paper", "runs/pets", "--no-compile", cwd=work, plugin_site=site)
    assert paper.returncode == 0, paper.stderr[-2000:]
    paper_dir = work / "runs" / "pets" / "paper"
    (paper_dir / "main.pdf").write_bytes(b"%PDF-1.5 stand-in\n")
    record_pdf(paper_dir, results_sha256(work / "runs" / "pets"))  # what a compile that succeeded records
    packed = peftlab("submission", "runs/pets", "--study", "configs/study.yaml", cwd=work, plugin_site=site)
    assert packed.returncode == 0, packed.stderr[-2000:]
    return work / "runs" / "pets" / f"{NAME}.tar.gz"


def unpacked(archive: Path, where: Path) -> Path:
    """The archive unpacked in ``where``, the study's data put where REPRODUCE.md says."""
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    root = where / NAME
    shutil.copytree(archive.parents[3] / "data" / "pets", root / "data" / "pets")
    return root
