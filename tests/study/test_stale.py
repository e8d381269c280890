"""A finished run trained on a base file whose bytes have changed since is refused, not reused."""

import hashlib
import json

import pytest

from peftlab.study.stale import refuse_stale_runs, stale_runs
from peftlab.utils.errors import UserError


def finished(study_dir, where, weights, sha):
    run = study_dir / where
    run.mkdir(parents=True)
    (run / "result.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "config": {"model": {"pretrained": str(weights)}},
                "provenance": {"base_sha256": sha},
            }
        )
    )


def test_runs_of_a_base_retrained_in_place_are_named_and_refused(tmp_path):
    weights = tmp_path / "cache" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"the old base")
    old = hashlib.sha256(b"the old base").hexdigest()
    study = tmp_path / "study"
    finished(study, "runs/aaa", weights, old)
    finished(study, "tune/lora/runs/bbb", weights, old)
    finished(study, "runs/ccc", "none", None)  # no local base: nothing to compare
    refuse_stale_runs(study)  # unchanged: reused

    weights.write_bytes(b"the retrained base")
    assert stale_runs(study) == {str(weights): ["runs/aaa", "tune/lora/runs/bbb"]}
    with pytest.raises(UserError) as err:
        refuse_stale_runs(study)
    message = str(err.value)
    assert "\n" not in message and f"{weights} changed after 2 finished run(s)" in message
    assert "(first: runs/aaa)" in message and "--study-dir" in message


def test_a_missing_base_or_a_result_without_provenance_is_left_to_the_runs(tmp_path):
    study = tmp_path / "study"
    finished(study, "runs/aaa", tmp_path / "gone.safetensors", "0" * 64)
    (study / "runs" / "bbb").mkdir(parents=True)
    (study / "runs" / "bbb" / "result.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    (study / "runs" / "ccc").mkdir(parents=True)
    (study / "runs" / "ccc" / "result.json").write_text("not json")
    assert stale_runs(study) == {}


def pinned_run(study_dir, where, products):
    run = study_dir / where
    run.mkdir(parents=True)
    arithmetic = {"pinned": products != "unpinned", "products": None if products == "unpinned" else products}
    (run / "result.json").write_text(json.dumps({"status": "completed", "provenance": {"arithmetic": arithmetic}}))


def test_finished_pinned_runs_of_another_pins_products_are_named_and_refused(tmp_path, monkeypatch):
    from peftlab.study.stale import refuse_other_products
    from peftlab.utils import cpu

    if not cpu.applies():
        pytest.skip("the pin's products exist for x86-64 CPUs only")
    monkeypatch.delenv(cpu.PRODUCTS_SWITCH, raising=False)
    study = tmp_path / "study"
    pinned_run(study, "runs/aaa", cpu.PRODUCTS_PIN)
    pinned_run(study, "runs/bbb", "unpinned")  # the CPU's own arithmetic: no pin to keep
    refuse_other_products(study)  # the pin's own: reused
    pinned_run(study, "tune/lora/runs/ccc", None)  # a run of the pin before 2026-11-29: MKL's products
    with pytest.raises(UserError) as err:
        refuse_other_products(study)
    text = str(err.value)
    assert "\n" not in text and "1 finished pinned run(s)" in text and "tune/lora/runs/ccc" in text
    assert "PEFTLAB_PIN_PRODUCTS=mkl" in text and "another --study-dir" in text
    monkeypatch.setenv(cpu.PRODUCTS_SWITCH, "mkl")  # finishing it as it computed: now runs/aaa is the other one
    with pytest.raises(UserError, match=r"first: runs/aaa.*PEFTLAB_PIN_PRODUCTS=onednn-quantized"):
        refuse_other_products(study)


def test_runs_of_the_pin_of_11_29s_products_or_of_products_no_switch_computes_are_refused_naming_what_to_do(
    tmp_path, monkeypatch
):
    """The runs of the pin of 2026-11-29 (``onednn``) are finished with its switch; a run recording products that
    no value of the switch computes (another version's, or an edited record) gets no switch to set, and says so."""
    from peftlab.study.stale import refuse_other_products
    from peftlab.utils import cpu

    if not cpu.applies():
        pytest.skip("the pin's products exist for x86-64 CPUs only")
    monkeypatch.delenv(cpu.PRODUCTS_SWITCH, raising=False)
    study = tmp_path / "study"
    pinned_run(study, "runs/aaa", cpu.PRODUCTS_ONEDNN)
    with pytest.raises(UserError, match=r"first: runs/aaa.*set PEFTLAB_PIN_PRODUCTS=onednn to finish"):
        refuse_other_products(study)
    monkeypatch.setenv(cpu.PRODUCTS_SWITCH, "onednn")
    refuse_other_products(study)  # that pin's own: reused
    pinned_run(study, "runs/bbb", "oneDNN AVX9")
    with pytest.raises(UserError) as err:
        refuse_other_products(study)
    text = str(err.value)
    assert "\n" not in text and "runs/bbb" in text and "no value of PEFTLAB_PIN_PRODUCTS computes them here" in text
    assert "=None" not in text
