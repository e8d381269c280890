"""The candidate pin as a benchmark's switch (``PEFTLAB_PIN_PRODUCTS=onednn``, ``models.products.SWITCH``): a
pinned run trains inside ``onednn_products`` and says so in ``provenance.arithmetic.products``, so its machine class
is its own (never the header's, never "Intel or AMD": the candidate's agreement across vendors is not yet
recorded); MKL's branch is still read through its own sgemm; an unpinned run ignores the switch; another value is
a one-line error. The run is trained as a notebook trains it (``peftlab.train`` after torch ran unpinned), so through
the API's pinned child, which is ``peftlab train`` started with the pin and the notebook's environment."""

import copy
import json
import os
import subprocess
import sys

import pytest
from testkit import REPO, needs_fashion_mnist, write_tiny_run

from peftlab.analysis.results.load import pinned_arithmetic
from peftlab.analysis.results.record import machine_class, machine_class_text
from peftlab.models import products
from peftlab.utils import cpu
from peftlab.utils.errors import ConfigError

ENV = {k: v for k, v in os.environ.items() if k not in (*cpu.PINNED, products.SWITCH)}
ENV["PYTHONPATH"] = str(REPO / "src")


TORCH_FIRST = """
import json, os, sys
import torch, timm  # a notebook's first cell: torch runs unpinned from here on
torch.ones(8, 8) @ torch.ones(8, 8)
import peftlab, yaml
os.environ[{switch!r}] = {value!r}  # set in the notebook, after torch ran: the pinned child inherits it
record = peftlab.train(yaml.safe_load(open({config!r})), run_dir={run_dir!r})
print(json.dumps(dict(record)))
"""


def train_from_notebook(tmp_path, name, switch) -> dict:
    """The API's pinned child (``peftlab.train`` where torch already runs unpinned, as in a notebook) with the
    switch set in the notebook's environment: the child, ``peftlab train`` started with the pin, inherits it."""
    config = write_tiny_run(tmp_path / f"{name}.yaml", reproducible=True)
    script = TORCH_FIRST.format(switch=products.SWITCH, value=switch, config=str(config), run_dir=str(tmp_path / name))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.splitlines()[-1])
    assert record == json.loads((tmp_path / name / "result.json").read_text())
    return record


@pytest.mark.e2e
@needs_fashion_mnist()
@pytest.mark.skipif(not cpu.applies(), reason="the pin's switches exist for x86-64 CPUs only")
def test_a_pinned_run_under_the_switch_records_the_candidate_and_is_a_class_of_its_own(tmp_path):
    candidate = train_from_notebook(tmp_path, "candidate", "onednn")
    arithmetic = candidate["provenance"]["arithmetic"]
    assert candidate["status"] == "completed"
    assert arithmetic["pinned"] is True and arithmetic["products"] == products.ONEDNN_PRODUCTS
    assert arithmetic["mkl_branch"] == "COMPATIBLE,STRICT"  # read through MKL's own sgemm, past the mode
    pin = copy.deepcopy(candidate)
    pin["provenance"]["arithmetic"]["products"] = None  # the same run's record under MKL's products
    theirs, mine = machine_class(pin), machine_class(candidate)
    assert theirs != mine and theirs["cpu_vendor"] == "Intel or AMD"
    assert mine["cpu_vendor"] == arithmetic["cpu_vendor"] and mine["products"] == products.ONEDNN_PRODUCTS
    assert "products through oneDNN AVX2" in machine_class_text(mine)
    assert pinned_arithmetic(arithmetic).endswith("MKL COMPATIBLE,STRICT, products through oneDNN AVX2")


def test_another_value_of_the_switch_is_a_one_line_error_naming_it(monkeypatch):
    monkeypatch.setenv(products.SWITCH, "mkl-avx512")
    with pytest.raises(ConfigError, match=r"PEFTLAB_PIN_PRODUCTS='mkl-avx512': expected onednn"):
        products.pinned_run_products(True)
    monkeypatch.setenv(products.SWITCH, "onednn")
    with products.pinned_run_products(False):
        assert products.products_record() is None  # an unpinned run: the CPU's own arithmetic, whatever it asks
    monkeypatch.delenv(products.SWITCH)
    with products.pinned_run_products(True):
        assert products.products_record() is None  # unset: MKL's products
