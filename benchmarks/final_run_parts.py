"""One final run of the default study, pinned, trained in this process with its stages timed (CPU seconds).

    python benchmarks/final_run_parts.py [--quant none|int8|nf4] [--method lora] [--out DIR] [--json FILE]

The run is the default study's first run of that method and base (configs/studies/default.yaml; the base must be
cached: make study or peftlab pretrain), its arithmetic pinned as ``peftlab study`` pins it (this script pins before
torch is imported). The recipe's stages are timed as ``peftlab bench --only P6`` times them in a study's worker
(``bench.fixed_cost.timed``): training steps, the validation passes in the loop, the test passes at the end (the
test split and the merged model's), the merge check, the data set-up and the build; and a LoRA run's merges of its
adapter into the base (``PeftTuner.merged_model``: the deployable's, and any the merge check makes itself). Unlike
P6 the run is not forked from a forkserver, so the build and the data set-up include imports and the dataset's
decoding: read the passes.

A side-by-side comparison of two trees runs it with each tree's sources in turn, alternating, for example
``PYTHONPATH=/tmp/old/src python benchmarks/final_run_parts.py --quant int8`` against the same with this tree's.
With ``--out`` the run directory stays, for comparing two trees' results bit for bit.

``--profile-tests``: each test pass (the test split's, the merged model's) under torch's profiler, its operators'
CPU time and the rate of its Linear products (the multiply-adds of the model's Linear layers over the pass's
images, as GFLOP/s of the products' own time): how far the products of a final run's overhead are from the core's
peak (an AVX2 core with two FMA units: 32 fp32 FLOP a cycle).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

STAGES = {  # what the output calls each timed function (module, name)
    "training steps": ("recipe", "training_step"),
    "validation passes (in the loop)": ("recipe", "evaluate"),
    "test passes (test, merged test)": ("outcome", "evaluate"),
    "merge check": ("outcome", "check_merge"),
    "merges (a LoRA run's)": ("lora", "merged_model"),
    "data set-up": ("recipe", "load_data"),
    "build": ("recipe", "build"),
    "adapter files": ("outcome", "write_adapter"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quant", default="none", help="the base's quant.mode (none, int8, nf4)")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--out", type=Path, help="keep the run directory here (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile-tests", action="store_true", help="profile the test passes' operators")
    args = parser.parse_args()

    from peftlab.utils.cpu import pin_arithmetic

    pin_arithmetic()  # before torch: the study's pin
    import torch

    from peftlab.bench.fixed_cost import timed
    from peftlab.study.spec import load_study
    from peftlab.training import outcome, recipe
    from peftlab.training.run import train
    from peftlab.tuners.peft_injection import PeftTuner

    study = load_study(Path("configs/studies/default.yaml"))
    runs = [s for s in study.runs if s.method == args.method and s.config.quant.mode == args.quant]
    if not runs:
        parser.error(f"the default study has no {args.method} run on a {args.quant} base")
    cpu: collections.Counter = collections.Counter()
    modules = {"recipe": recipe, "outcome": outcome, "lora": PeftTuner}
    for stage, (module, name) in STAGES.items():
        timed(modules[module], name, cpu, stage)
    passes: list[dict] = []
    if args.profile_tests:
        profile_test_passes(outcome, passes)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = (args.out or Path(scratch)) / "run"
        started = time.process_time()
        result = train(runs[0].config, run_dir, progress=False)
        total = time.process_time() - started
    figures = {
        "run": f"{args.method}, quant.mode {args.quant}",
        "status": result["status"],
        "process_cpu_seconds": round(total, 3),
        "stages_cpu_seconds": {stage: round(cpu[stage], 3) for stage in STAGES},
        "test_top1": result["metrics"]["test_top1"],
        "merged_test_top1": result["metrics"]["merged_test_top1"],
        **({"test_passes": passes} if passes else {}),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if result["status"] == "completed" else 1


def profile_test_passes(outcome, passes: list[dict]) -> None:
    """Wrap ``outcome.evaluate`` (the test passes): each pass's operators' CPU ms and its Linear products' rate."""
    import torch

    evaluate = outcome.evaluate

    def profiled(model, dataset, *rest, **options):
        macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            numbers = evaluate(model, dataset, *rest, **options)
        ops = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
        products = ops.get("mkldnn::_linear_pointwise", 0.0) + ops.get("aten::addmm", 0.0) + ops.get("aten::mm", 0.0)
        tokens = len(dataset) * tokens_per_image(model)
        passes.append(
            {
                "pass": rest[3] if len(rest) > 3 else "?",
                "images": len(dataset),
                "operators_cpu_ms": {k: round(v, 1) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:8]},
                "linear_gflop": round(2 * macs * tokens / 1e9, 2),
                "linear_gflops_per_s": round(2 * macs * tokens / 1e9 / (products / 1e3), 1) if products else None,
            }
        )
        return numbers

    outcome.evaluate = profiled


def tokens_per_image(model) -> int:
    """The tokens a ViT's blocks see per image (its patches and class token), read from its patch embedding."""
    found = next(m for m in model.modules() if hasattr(m, "num_patches") and hasattr(m, "proj"))
    return found.num_patches + 1


if __name__ == "__main__":
    raise SystemExit(main())
