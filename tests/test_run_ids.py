"""Run ids are the names of finished results: a refactoring of the config code must keep them.

The values were computed by peftlab at commit 96e60b7 (before config.py was split into
config_checks / config_sections / config_yaml / config_paths), from the files in configs/.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from peftlab.config.schema import config_hash, load_config
from peftlab.study.spec import load_study

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_run_id_of_the_downstream_config_is_pinned():
    assert config_hash(load_config(CONFIGS / "downstream.yaml")) == "817ef5e4015b"


@pytest.mark.parametrize(
    "study, count, first, digest",
    [
        ("default", 40, "2c5e71513fdb", "e87d3593b318"),  # tuned: the head trains at train.lr (issue 25)
        ("adaptive", 55, "c9fb5e720aec", "8205b2ad5959"),
    ],
)
def test_the_run_ids_of_a_study_are_pinned(study, count, first, digest):
    runs = load_study(CONFIGS / "studies" / f"{study}.yaml").runs
    ids = sorted(run.run_id for run in runs)
    assert len(ids) == count and runs[0].run_id == first
    assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:12] == digest
