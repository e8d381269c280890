"""The pin (``onednn-quantized``, a candidate until 2026-11-30) against the pin of 2026-11-29 (``onednn``): a QLoRA
step of the default study, side by side in one process. The JSON keeps the names of when it was measured as a
candidate: "pin" is the pin of 2026-11-29, "candidate" the pin since 2026-11-30.

    python benchmarks/quantized_backward_step.py [--repeats 5] [--steps 10] [--json FILE]

For the default study's LoRA r=8 on an int8 and on an nf4 base (configs/studies/default.yaml; a random base, the
step's cost does not depend on its weights), at the study's batch of 64, one thread, the study's pin (set before torch
is imported): ``--steps`` training steps (peftlab's ``training_step``) inside ``onednn_products`` with the pin's
products and with the candidate's (``models.products.QUANTIZED``: the quantized base's backward products through
oneDNN), alternating, the order turning each repetition, a warm-up first. The int8 base is built with the
candidate's layer (``quant.int8.CandidateLinear8bitLt``), which computes bitsandbytes' own step under the pin. It
prints the median CPU milliseconds of a step by mode and their ratio, min and max of the per-repetition ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path


def timed_steps(cfg, repeats: int, steps: int) -> dict[str, list[float]]:
    """CPU ms a step, per repetition, of ``cfg``'s run under the pin's products and the candidate's, alternating."""
    import torch

    from peftlab.bench.common import Trainer
    from peftlab.models import products
    from peftlab.training.step import training_step

    generator = torch.Generator().manual_seed(1)
    size, batch = cfg.model.img_size, cfg.train.batch_size
    images = torch.randn(batch, cfg.model.in_chans, size, size, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    trainer = Trainer(cfg, images, labels, "fp32", clip_grad=cfg.train.clip_grad)
    modes = {"pin": products.ONEDNN_PRODUCTS, "candidate": products.QUANTIZED}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for repeat in range(repeats + 1):  # the first a warm-up
        for mode in list(modes)[:: 1 if repeat % 2 == 0 else -1]:
            started = time.process_time()
            with products.onednn_products(modes[mode]):
                for step in range(steps):
                    batches = [(images, labels)]
                    training_step(trainer.model, trainer.tuner, batches, trainer.optimization, step=step, n_micro=1)
            if repeat:
                times[mode].append((time.process_time() - started) * 1e3 / steps)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from peftlab.utils.cpu import PRODUCTS_ONEDNN_QUANTIZED, PRODUCTS_SWITCH, pin_arithmetic, products_switch

    pin_arithmetic()  # before torch: the study's pin
    os.environ[PRODUCTS_SWITCH] = products_switch(PRODUCTS_ONEDNN_QUANTIZED)  # the int8 base: the candidate's layer
    import torch

    from peftlab.study.spec import load_study

    torch.set_num_threads(1)
    study = load_study(Path("configs/studies/default.yaml"))
    figures = {}
    for quant in ("int8", "nf4"):
        cfg = next(s.config for s in study.runs if s.method == "lora" and s.config.quant.mode == quant)
        # a random base (the cached one need not exist: pin_candidates.sh runs on a fresh clone)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none"))
        times = timed_steps(cfg, args.repeats, args.steps)
        pin, candidate = statistics.median(times["pin"]), statistics.median(times["candidate"])
        ratios = [c / p for p, c in zip(times["pin"], times["candidate"])]
        figures[quant] = {
            "median_cpu_ms": {"pin": round(pin, 1), "candidate": round(candidate, 1)},
            "ratio": round(candidate / pin, 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        }
        print(
            f"lora on {quant}: a step {pin:.1f} ms of CPU pinned, {candidate:.1f} under the candidate; ratio "
            f"{candidate / pin:.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
