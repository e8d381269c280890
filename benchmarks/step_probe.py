"""Where a pinned training step first gives other bits on another CPU: every module's forward output and output
gradient, and every parameter after AdamW, hashed over a few steps of the default study's pretraining model.

    python benchmarks/step_probe.py [--steps 3] [--threads 2] [--out FILE.json] [--compare RECORDED.json]

The model, loss, optimizer and clipping are the pretraining's (configs/pretrain.yaml: the 4-block ViT of width 128
at 28 px, cross-entropy, the fused AdamW a pinned run takes, train.clip_grad), under peftlab's pin
(``utils.cpu.pin_arithmetic``, set before torch is imported); the batch is a seeded normal draw of the pretraining's
batch size, so no data is needed. Each step records, in the order autograd ran them, ``fwd <module>`` (its output),
``bwd <module>`` (the gradient of its output), ``grad <name>`` (each parameter's gradient, where the reductions over
the batch happen), ``grad norm`` (the clipping's) and, after the optimizer step, ``param <name>``: an 8-hex SHA-256
of the tensor's bytes. ``--compare`` names the first entry whose hash differs from a recorded file (another CPU's),
which is the first operation of a real step that rounds differently there. The lines measured here are committed
beside this file (benchmarks/step_probe/*.json), one per CPU they were measured on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftlab.utils.cpu import pin_arithmetic  # before torch: the pin is read once

REPO = Path(__file__).resolve().parents[1]


def digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:8]


def probe(steps: int, threads: int) -> dict:
    import torch

    from peftlab.config.schema import load_config
    from peftlab.models.backbones import build_backbone
    from peftlab.utils.provenance import cpu_model, cpu_vendor

    torch.set_num_threads(threads)
    cfg = load_config(REPO / "configs" / "pretrain.yaml")
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.model, 10).train()
    entries: list[tuple[str, str]] = []
    names = {module: name or "model" for name, module in model.named_modules()}

    def forward_hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            entries.append((f"fwd {names[module]}", digest(output)))

    def backward_hook(module, grad_input, grad_output):
        if grad_output and isinstance(grad_output[0], torch.Tensor):
            entries.append((f"bwd {names[module]}", digest(grad_output[0])))

    for module in model.modules():
        if not list(module.children()):  # the leaves: the operations, each once
            module.register_forward_hook(forward_hook)
            module.register_full_backward_hook(backward_hook)
    tc = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(1)
    size, chans = cfg.model.img_size, cfg.model.in_chans
    record = []
    for step in range(steps):
        entries.clear()
        images = torch.randn(tc.batch_size, chans, size, size, generator=generator)
        labels = torch.randint(0, 10, (tc.batch_size,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=tc.label_smoothing)
        entries.append(("loss", digest(loss)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        entries += [(f"grad {name}", digest(p.grad)) for name, p in model.named_parameters() if p.grad is not None]
        if tc.clip_grad:
            entries.append(("grad norm", digest(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad))))
        optimizer.step()
        entries += [(f"param {name}", digest(p)) for name, p in model.named_parameters()]
        record.append({"step": step, "entries": [list(e) for e in entries]})
    every = hashlib.sha256(json.dumps(record).encode()).hexdigest()[:12]
    return {
        "cpu_vendor": cpu_vendor(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "pin": {name: os.environ.get(name) for name in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")},
        "threads": threads,
        "steps": steps,
        "all": every,
        "record": record,
    }


def first_difference(mine: dict, recorded: dict) -> str | None:
    """The first (step, entry) whose hash differs, in autograd's order; None when every entry is equal."""
    for here, there in zip(mine["record"], recorded["record"], strict=False):
        for (name, value), (other_name, other) in zip(here["entries"], there["entries"], strict=False):
            if name != other_name:
                return f"step {here['step']}: the entries' order differs ({name} here, {other_name} recorded)"
            if value != other:
                return f"step {here['step']}: {name} ({value} here, {other} recorded)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the record here (JSON)")
    parser.add_argument("--compare", help="a recorded file: name the first entry that differs from it")
    args = parser.parse_args()
    pin_arithmetic()
    # the input needs no gradient: PyTorch says the first leaf's hook sees its output's gradient alone, as wanted
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    result = probe(args.steps, args.threads)
    machine = f"{result['cpu_vendor']} {result['cpu_model']}"
    print(f"{machine}: threads {args.threads}, {args.steps} steps, all {result['all']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.compare:
        recorded = json.loads(Path(args.compare).read_text())
        where = first_difference(result, recorded)
        other = f"{recorded['cpu_vendor']} {recorded['cpu_model']}, threads {recorded['threads']}"
        verdict = f"first difference at {where}" if where else "every entry equal"
        print(f"against {args.compare} ({other}): {verdict}")


if __name__ == "__main__":
    main()
