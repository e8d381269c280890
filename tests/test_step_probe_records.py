"""Issues 80 and 87: an Intel Xeon's pinned training steps are this CPU's. The committed records of both vendors
(benchmarks/step_probe/: AMD EPYCs' and an Intel Xeon host's, each made on its own machine) agree entry for entry,
under the pin (every Linear's products through oneDNN at AVX2: an AMD EPYC with AVX-512 and one with AVX2 only against
the Xeon), under the pin since 2026-11-30, onednn-quantized (both EPYCs against the Xeon), and under the
former pin that archives of its runs rerun with (MKL's COMPATIBLE branch: both EPYCs against the Xeon), and this
machine, whichever x86 CPU runs the suite, gives the Xeon's record under the pin: three steps of the pretraining and
of each default-study configuration the pin reaches (bitsandbytes' QLoRA steps are held to the records alone: their
kernels choose their code by the CPU, so the probe here leaves them out)."""

import json
import os
import subprocess
import sys

import pytest
from testkit import REPO

from peftlab.utils import cpu

RECORDS = REPO / "benchmarks" / "step_probe"
AMD = "amd-epyc-avx2-compatible-threads{}.json"
INTEL = "intel-xeon-avx512-amx-host-compatible-downstream-threads{}.json"
AMD_PIN = "amd-epyc-avx512bf16-onednn-downstream-threads{}.json"
INTEL_PIN = "intel-xeon-avx512-amx-onednn-downstream-threads{}.json"  # the pin of 2026-11-29
INTEL_PIN_NOW = "intel-xeon-avx512-amx-onednn-quantized-downstream-threads{}.json"  # the pin since 2026-11-30
AMD_AVX512_COMPATIBLE = "amd-epyc-avx512bf16-compatible-downstream-threads{}.json"
# the three pins' records of an AMD EPYC with AVX2 only (benchmarks/pin_candidates.sh, 2026-11-30)
AMD_AVX2 = "amd-epyc-avx2-{}-downstream-threads{}.json"
# an AMD EPYC with AVX-512's records of the pin and of the candidates (pin_candidates.sh, 2026-12-01)
AMD_AVX512 = "amd-epyc-avx512bf16-{}-downstream-threads{}.json"
AMD_PIN_NOW = AMD_AVX512.replace("{}", "onednn-quantized", 1)


def first_difference(mine: dict, recorded: dict) -> str | None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from step_probe import first_difference as probe_first_difference
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return probe_first_difference(mine, recorded)


def record(name: str) -> dict:
    return json.loads((RECORDS / name).read_text())


def all_steps_agree(mine: dict, theirs: dict, bitsandbytes: bool) -> None:
    """The pretraining's steps and every downstream configuration's (QLoRA's too where ``bitsandbytes``) equal."""
    assert first_difference(mine, theirs) is None
    compared = [name for name, step in theirs["downstream"].items() if "skipped" not in step]
    for name in compared:
        assert first_difference(mine["downstream"][name], theirs["downstream"][name]) is None, name
    expected = {"full", "linear", "lora", "adalora", "adaptive", "qalora"}
    assert expected <= set(compared) and set(mine["downstream"]) == set(theirs["downstream"])
    if bitsandbytes:
        assert {"lora quant=int8", "lora quant=nf4"} <= set(compared)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_committed_records_of_both_vendors_agree_entry_for_entry(threads):
    amd, intel = record(AMD.format(threads)), record(INTEL.format(threads))
    assert (amd["cpu_vendor"], intel["cpu_vendor"]) == ("AuthenticAMD", "GenuineIntel")
    assert amd["pin"] == intel["pin"] == cpu.PINNED
    # bitsandbytes was carried to the Xeon for the 2-thread record: there the QLoRA steps agree as well
    all_steps_agree(amd, intel, bitsandbytes=threads == 2)
    former = record(f"amd-epyc-avx2-threads{threads}.json")  # the pin of 2026-11-27 (MKL's AVX2 branch)
    assert first_difference(former, intel).startswith("step 0: fwd blocks.0.attn.qkv")  # tells pins apart


@pytest.mark.parametrize("threads", [1, 2])
def test_the_pins_records_of_both_vendors_agree_entry_for_entry(threads):
    amd, intel = record(AMD_PIN.format(threads)), record(INTEL_PIN.format(threads))
    assert (amd["cpu_vendor"], intel["cpu_vendor"]) == ("AuthenticAMD", "GenuineIntel")
    assert amd["pin"] == intel["pin"] == cpu.PINNED and amd["variant"] == intel["variant"] == "onednn"
    all_steps_agree(amd, intel, bitsandbytes=True)  # bitsandbytes was on both machines
    compatible = record(AMD_AVX512_COMPATIBLE.format(threads))  # the former pin on the same EPYC
    assert first_difference(compatible, record(INTEL.format(threads))) is None
    assert first_difference(compatible, amd) is not None  # the probe tells the two pins apart


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", ["onednn", "onednn-quantized", "compatible"])
def test_an_avx2_only_cpus_records_agree_with_the_xeons_under_every_pin(variant, threads):
    avx2 = record(AMD_AVX2.format(variant, threads))
    intel = record(
        INTEL.format(threads)
        if variant == "compatible"
        else f"intel-xeon-avx512-amx-{variant}-downstream-threads{threads}.json"
    )
    assert (avx2["cpu_vendor"], intel["cpu_vendor"]) == ("AuthenticAMD", "GenuineIntel")
    assert avx2["capability"] == "AVX2" and avx2["pin"] == intel["pin"] == cpu.PINNED and avx2["variant"] == variant
    # the Xeon's former-pin record took bitsandbytes at 2 threads alone; the two oneDNN ones at both
    all_steps_agree(avx2, intel, bitsandbytes=variant != "compatible" or threads == 2)
    if variant == "onednn-quantized":  # its QLoRA steps are not 2026-11-29's pin's: the probe tells them apart
        pin = record(AMD_AVX2.format("onednn", threads))
        assert first_difference(pin, avx2) is None  # the pretraining: full fine-tuning, the same products
        for name in ("lora quant=int8", "lora quant=nf4"):
            assert first_difference(pin["downstream"][name], avx2["downstream"][name]) is not None, name


@pytest.mark.parametrize("threads", [1, 2])
def test_an_avx512_epycs_records_of_the_pin_since_2026_11_30_agree_with_the_xeons(threads):
    amd, intel = record(AMD_AVX512.format("onednn-quantized", threads)), record(INTEL_PIN_NOW.format(threads))
    assert (amd["cpu_vendor"], intel["cpu_vendor"]) == ("AuthenticAMD", "GenuineIntel")
    assert amd["pin"] == intel["pin"] == cpu.PINNED and amd["variant"] == intel["variant"] == "onednn-quantized"
    all_steps_agree(amd, intel, bitsandbytes=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_xeons_onednn_avx512_records_took_the_unfused_adamw_and_differ_there_alone(threads):
    """Before 2026-12-01 the probe gave a variant that changes the pin's switches the unfused AdamW (its square root
    through MKL's VML, by vendor): the Xeon's onednn-avx512 records part from an AMD EPYC's, made with the fused
    AdamW, at each run's first parameter after the optimizer, every product, gradient and norm before it equal."""
    amd, intel = (
        record(AMD_AVX512.format("onednn-avx512", threads)),
        record(f"intel-xeon-avx512-amx-onednn-avx512-downstream-threads{threads}.json"),
    )
    assert amd["variant"] == intel["variant"] == "onednn-avx512"
    assert amd["pin"]["ONEDNN_MAX_CPU_ISA"] == intel["pin"]["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"
    assert first_difference(amd, intel) is None  # the pretraining: its AdamW was fused on both
    for name, step in intel["downstream"].items():
        assert step.get("adamw") is None and amd["downstream"][name]["adamw"] == "fused", name
        # every forward, backward, gradient and norm of step 0 equal; a parameter after the optimizer differs
        assert first_difference(amd["downstream"][name], step).startswith("step 0: param "), name


@pytest.mark.parametrize("threads", [1, 2])
def test_the_candidate_onednn_mkl_avx2_parts_from_the_pin_first_at_attention(threads):
    """The candidate of 2026-12-01 computes the batched products the pin leaves to MKL in MKL's AVX2 branch: on the
    AMD EPYC that recorded it, the pretraining and every configuration first differ from the pin at the first
    block's attention output (``attn.norm``, the identity after ATen's fused attention), every entry before it
    equal; an AMD EPYC with AVX2 only gave that record entry for entry, QLoRA's steps included (2026-12-03). No Intel
    record of it exists yet (benchmarks/pin_candidates.sh takes one)."""
    candidate, pin = record(AMD_AVX512.format("onednn-mkl-avx2", threads)), record(AMD_PIN_NOW.format(threads))
    all_steps_agree(record(AMD_AVX2.format("onednn-mkl-avx2", threads)), candidate, bitsandbytes=True)
    assert candidate["pin"] == {**cpu.PINNED, "MKL_CBWR": "AVX2,STRICT"} and candidate["variant"] == "onednn-mkl-avx2"
    assert first_difference(candidate, pin).startswith("step 0: fwd blocks.0.attn.norm ")
    assert set(candidate["downstream"]) == set(pin["downstream"])
    for name, step in pin["downstream"].items():
        assert first_difference(candidate["downstream"][name], step).split(" (")[0].endswith("blocks.0.attn.norm"), name


@pytest.mark.skipif(not cpu.applies(), reason="the switches exist for x86-64 CPUs only")
def test_this_cpu_gives_the_intel_xeons_pinned_steps(tmp_path):
    out = tmp_path / "here.json"
    env = {key: value for key, value in os.environ.items() if key not in (*cpu.PINNED, cpu.PRODUCTS_SWITCH)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step_probe.py"), "--threads", "2", "--downstream"]
        + ["--no-bitsandbytes", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the pin since 2026-11-30, whose steps without bitsandbytes are the pin of 2026-11-29's too
    here, intel = json.loads(out.read_text()), record(INTEL_PIN_NOW.format(2))
    assert here["pin"] == cpu.PINNED and here["variant"] == "pin"  # the switches set before its torch was imported
    assert first_difference(here, intel) is None
    # every configuration the pin reaches, compared; bitsandbytes' QLoRA steps, held to the records alone, not taken
    pinned = {name for name, step in intel["downstream"].items() if not step["bitsandbytes"]}
    assert {name for name, step in here["downstream"].items() if "skipped" not in step} == pinned
    for name in pinned:
        assert not here["downstream"][name]["bitsandbytes"], name
        assert first_difference(here["downstream"][name], intel["downstream"][name]) is None, name
