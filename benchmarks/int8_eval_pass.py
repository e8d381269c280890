"""An int8 base's evaluation pass, pinned, with bitsandbytes' quantization kernels and with peftlab's, in one process.

    python benchmarks/int8_eval_pass.py [--repeats 6] [--quant int8] [--json FILE]

The model is the default study's LoRA r=8 on an int8 base (configs/studies/default.yaml; its base must be cached:
make study or peftlab pretrain), the data its 2,000 test images in batches of 500, one thread, the study's pin
(``pin_arithmetic`` before torch, the pass inside ``onednn_products``). Two routes are timed in alternation, the
order turning each repetition, the first repetition a warm-up:

- ``bitsandbytes``: the input's quantization and the product's dequantization by bitsandbytes' own CPU kernels, the
  int8 product through oneDNN (the pin as session 17 left it);
- ``peftlab``: the same operations by ``products.int8_vectorwise_quant`` and ``products.int8_scaled_mm``.

Every pass's logits must equal the first pass's, bit for bit, or the script stops. It prints the median CPU
milliseconds of a pass by route and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--quant", default="int8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from peftlab.utils.cpu import pin_arithmetic

    pin_arithmetic()  # before torch: the study's pin
    import torch

    from peftlab.data.inputs import build_splits
    from peftlab.models import products
    from peftlab.models.backbones import model_inputs
    from peftlab.study.spec import load_study
    from peftlab.tuners.base import TunerContext
    from peftlab.tuners.build import build_tuned

    torch.set_num_threads(1)
    study = load_study(Path("configs/studies/default.yaml"))
    cfg = next(s.config for s in study.runs if s.method == "lora" and s.config.quant.mode == args.quant)
    splits = build_splits(cfg.data, model_inputs(cfg.model, cfg.data.max_length), torch.device("cpu"), 0)
    context = TunerContext(total_steps=1, device=torch.device("cpu"), quant=cfg.quant)
    model = build_tuned(cfg.model, cfg.method, splits.info.num_classes, context, seed=cfg.seed)[0].model.eval()
    batches = [torch.stack([splits.test[i][0] for i in range(j, j + 500)]) for j in range(0, 2000, 500)]

    def kernels_scaled_mm(a, b, row_stats, col_stats, bias=None, dtype=None):
        dequantize = torch.ops.bitsandbytes.int8_mm_dequant.default
        return dequantize(products.int8_product(a, b), row_stats, col_stats, dtype=dtype or torch.float16, bias=bias)

    routes = {
        "bitsandbytes": (lambda *a: False, kernels_scaled_mm),
        "peftlab": (products.fast_quant, products.int8_scaled_mm),
    }

    def timed_pass(route: str) -> tuple[float, list]:
        products.fast_quant, products.int8_scaled_mm = routes[route]
        products.INT8_OPS["bitsandbytes::int8_scaled_mm"] = (routes[route][1], 0, 1)
        started = time.process_time()
        with torch.no_grad(), products.onednn_products():
            logits = [model(x) for x in batches]
        return (time.process_time() - started) * 1e3, logits

    times: dict[str, list[float]] = {route: [] for route in routes}
    first = None
    for repeat in range(args.repeats + 1):
        for route in list(routes)[:: 1 if repeat % 2 == 0 else -1]:
            ms, logits = timed_pass(route)
            first = first or logits
            if not all(torch.equal(a, b) for a, b in zip(first, logits)):
                raise SystemExit(f"{route}: the logits differ from the first pass's")
            if repeat:
                times[route].append(ms)
    medians = {route: statistics.median(t) for route, t in times.items()}
    ratio = medians["peftlab"] / medians["bitsandbytes"]
    ratios = [p / b for p, b in zip(times["peftlab"], times["bitsandbytes"])]
    figures = {
        "quant": args.quant,
        "median_cpu_ms": {route: round(ms, 1) for route, ms in medians.items()},
        "ratio": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "logits_equal": True,
    }
    print(
        f"{args.quant} evaluation pass, 2,000 images: bitsandbytes' kernels {medians['bitsandbytes']:.0f} ms, "
        f"peftlab's {medians['peftlab']:.0f} ms of CPU; ratio {ratio:.3f} [{min(ratios):.3f}-{max(ratios):.3f}], "
        "the same logits"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
