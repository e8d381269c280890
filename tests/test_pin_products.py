"""The pin's products (``models.products``): a pinned run trains inside ``onednn_products`` and says so in
``provenance.arithmetic.products``; ``PEFTLAB_PIN_PRODUCTS=mkl`` (``models.products.SWITCH``) trains one with MKL's
products, as runs before 2026-11-29 did, recorded without them, and ``=onednn`` as runs of 2026-11-29 did. Both are
vendor-free classes ("Intel or AMD"), and two classes: a run of one is never judged against records of the other. MKL's
branch is still read through its own sgemm; an unpinned run ignores the switch; another value is a one-line error. The
runs are trained as a notebook trains them (``peftlab.train`` after torch ran unpinned: in the test's process, whose
torch runs unpinned as a kernel's does), so through the API's pinned child, which is ``peftlab train`` started with the
pin and the caller's environment."""

import json

import pytest
import yaml
from testkit import needs_fashion_mnist, write_tiny_run

from peftlab.analysis.results.load import pinned_arithmetic
from peftlab.analysis.results.record import machine_class, machine_class_text
from peftlab.models import products
from peftlab.utils import cpu
from peftlab.utils.errors import ConfigError


def train_from_notebook(tmp_path, monkeypatch, name, switch) -> dict:
    """The API's pinned child (``peftlab.train`` where torch already runs unpinned: this test's process, as a
    notebook's kernel whose first cell imported torch) with the switch set in this process's environment after torch
    ran: the child, ``peftlab train`` started with the pin, inherits it."""
    import peftlab

    config = write_tiny_run(tmp_path / f"{name}.yaml", reproducible=True)
    assert cpu.torch_runs_unpinned()  # torch ran here unpinned: the run trains in a pinned child
    monkeypatch.setenv(products.SWITCH, switch)
    record = peftlab.train(yaml.safe_load(config.read_text()), run_dir=tmp_path / name)
    record = json.loads(json.dumps(dict(record)))
    assert record == json.loads((tmp_path / name / "result.json").read_text())
    return record


@pytest.mark.e2e
@needs_fashion_mnist()
@pytest.mark.skipif(not cpu.applies(), reason="the pin's switches exist for x86-64 CPUs only")
def test_a_pinned_run_records_the_pins_products_and_the_former_pins_run_is_a_class_of_its_own(tmp_path, monkeypatch):
    pinned = train_from_notebook(tmp_path, monkeypatch, "pinned", "")
    former = train_from_notebook(tmp_path, monkeypatch, "former", "mkl")
    for record in (pinned, former):
        assert record["status"] == "completed" and record["provenance"]["arithmetic"]["pinned"] is True
        assert record["provenance"]["arithmetic"]["mkl_branch"] == "COMPATIBLE,STRICT"  # MKL's own sgemm, past the mode
    assert pinned["provenance"]["arithmetic"]["products"] == products.QUANTIZED
    assert former["provenance"]["arithmetic"]["products"] is None
    weights = [(tmp_path / name / "adapter.safetensors").read_bytes() for name in ("pinned", "former")]
    assert weights[0] != weights[1]  # other products, other bits
    mine, theirs = machine_class(pinned), machine_class(former)
    assert mine != theirs and mine["cpu_vendor"] == theirs["cpu_vendor"] == "Intel or AMD"
    assert "products through oneDNN AVX2, quantized bases' backward too" in machine_class_text(mine)
    assert "products through" not in machine_class_text(theirs)
    arithmetic = pinned["provenance"]["arithmetic"]
    assert pinned_arithmetic(arithmetic).endswith("MKL COMPATIBLE,STRICT, products through " + products.QUANTIZED)


def test_another_value_of_the_switch_is_a_one_line_error_naming_it(monkeypatch):
    monkeypatch.setenv(products.SWITCH, "mkl-avx512")
    with pytest.raises(ConfigError, match=r"PEFTLAB_PIN_PRODUCTS='mkl-avx512': expected onednn-quantized"):
        products.pinned_run_products(True)
    monkeypatch.setenv(products.SWITCH, "mkl")
    with products.pinned_run_products(True):
        assert products.products_record() is None  # MKL's products: the pin before 2026-11-29
    if cpu.applies():
        monkeypatch.setenv(products.SWITCH, "onednn")
        with products.pinned_run_products(True):
            assert products.products_record() == products.ONEDNN_PRODUCTS  # the pin of 2026-11-29
            assert not products.quantized_backward()
    monkeypatch.delenv(products.SWITCH)
    with products.pinned_run_products(False):
        assert products.products_record() is None  # an unpinned run: the CPU's own arithmetic
    if cpu.applies():
        with products.pinned_run_products(True):
            assert products.products_record() == products.QUANTIZED and products.quantized_backward()  # unset


@pytest.mark.skipif(not cpu.applies(), reason="the pin's switches exist for x86-64 CPUs only")
def test_a_cached_base_of_mkls_products_is_trained_again_and_one_of_either_onednn_pin_serves_both(
    tmp_path, monkeypatch
):
    from peftlab.config.schema import config_hash, load_config
    from peftlab.data.readers.records import hash_file
    from peftlab.training.bases.pretrain import cached_manifest, other_products

    cfg = load_config(overrides={"method": {"name": "full"}, "train": {"reproducible": True}})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    manifest = {"weights": weights.name, "config_hash": config_hash(cfg, 16), "sha256": hash_file(weights)}
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.delenv(products.SWITCH, raising=False)
    for recorded, pin, mkl in ((None, None, manifest), (products.ONEDNN_PRODUCTS, manifest, None)):
        entry = {**manifest, **({"products": recorded} if recorded else {})}  # a manifest of before: no key
        (tmp_path / "manifest.json").write_text(json.dumps(entry))
        done = {"status": "completed", "provenance": {"arithmetic": {"products": recorded}}}
        (run / "result.json").write_text(json.dumps(done))
        monkeypatch.delenv(products.SWITCH, raising=False)
        assert (cached_manifest(cfg, tmp_path) or None) == (pin and entry)
        assert other_products(run, cfg) is (pin is None)  # its run is trained again, not reused
        monkeypatch.setenv(products.SWITCH, "mkl")  # an archive's rerun of the former pin's runs
        assert (cached_manifest(cfg, tmp_path) or None) == (mkl and entry)
        assert other_products(run, cfg) is (mkl is None)
        monkeypatch.setenv(products.SWITCH, "onednn")  # the pin of 2026-11-29 pretrains as the pin does
        assert (cached_manifest(cfg, tmp_path) or None) == (pin and entry)
        assert other_products(run, cfg) is (pin is None)
    # a base the pin trained (its run records the pin's products) serves the pin and that of 2026-11-29, not MKL's
    entry = {**manifest, "products": products.QUANTIZED}
    (tmp_path / "manifest.json").write_text(json.dumps(entry))
    done = {"status": "completed", "provenance": {"arithmetic": {"products": products.QUANTIZED}}}
    (run / "result.json").write_text(json.dumps(done))
    for switch, served in (("", True), ("onednn-quantized", True), ("onednn", True), ("mkl", False)):
        monkeypatch.setenv(products.SWITCH, switch)
        assert (cached_manifest(cfg, tmp_path) or None) == (served and entry or None), switch
        assert other_products(run, cfg) is not served, switch
