"""Where a pinned training step first gives other bits on another CPU: every module's forward output and output
gradient, and every parameter after AdamW, hashed over a few steps of the default study's pretraining model.

    python benchmarks/step_probe.py [--steps 3] [--threads 2] [--downstream [--no-bitsandbytes]] [--variant pin]
                                    [--out FILE.json] [--compare RECORDED.json]

The model, loss, optimizer and clipping are the pretraining's (configs/pretrain.yaml: the 4-block ViT of width 128
at 28 px, cross-entropy, the fused AdamW a pinned run takes, train.clip_grad), under peftlab's pin
(``utils.cpu.pin_arithmetic``, set before torch is imported); the batch is a seeded normal draw of the pretraining's
batch size, so no data is needed. Each step records, in the order autograd ran them, ``fwd <module>`` (its output),
``bwd <module>`` (the gradient of its output), ``grad <name>`` (each parameter's gradient, where the reductions over
the batch happen), ``grad norm`` (the clipping's) and, after the optimizer step, ``param <name>``: an 8-hex SHA-256
of the tensor's bytes. ``--compare`` names the first entry whose hash differs from a recorded file (another CPU's),
which is the first operation of a real step that rounds differently there. The lines measured here are committed
beside this file (benchmarks/step_probe/*.json), one per CPU they were measured on.

``--downstream`` adds a step of each configuration of the default study (configs/studies/default.yaml: full, linear,
LoRA on the q and v slices, AdaLoRA, the controller, QA-LoRA, QLoRA int8 and nf4), each the study's own config on a
random base (``model.pretrained: none``) and a seeded batch of its batch size, trained by peftlab's step
(``training.step.training_step`` through ``bench.common.Trainer``, at its rates, the tuner's hooks included): the
same entries, where ``grad <name>`` is taken as each trainable parameter's gradient is accumulated. Each says whether
its model holds bitsandbytes layers, whose kernels choose their code by the CPU and which the pin does not reach.

``--variant`` computes the step another way, to find what makes two CPUs agree (``VARIANTS``): MKL's AVX2 branch
(``avx2``, the pin until 2026-11-27), or every product in MKL's COMPATIBLE branch (``compatible``, the pin until
2026-11-29), or every ``nn.Linear`` as ``x @ W^T`` then ``+ b`` instead of MKL's ``addmm`` (it does not reach
peftlab's fused q/k/v, which calls ``addmm`` itself). ``onednn`` (the pin of 2026-11-29) computes every product of a
Linear (forward and both backward products, peftlab's fused q/k/v and LoRA factors included) through oneDNN at the
pin's AVX2 cap (``peftlab.models.products``), at about half COMPATIBLE's cost. The pin (``pin``, the same as
``onednn-quantized``, a candidate until 2026-11-30) takes a quantized base's backward products through oneDNN too,
which ``onednn`` leaves in MKL's COMPATIBLE branch: their records are equal but for the int8 and nf4 steps, which
first differ at their first backward entry. Candidates: ``onednn-avx512`` (``onednn``'s products at AVX512_CORE, for
AVX-512 CPUs alone) and ``onednn-mkl-avx2`` (the pin, with the batched products it leaves to MKL in MKL's AVX2
branch).
Compare a variant's record with another CPU's record of the same variant. Measured (issue 80): in MKL's AVX2 branch
an Intel Xeon with AMX and AMD EPYCs part at step 0's ``fwd blocks.0.attn.qkv`` (812 of 828 pretraining entries
differ at 2 threads), bias apart or not; in its COMPATIBLE branch every entry agreed at 1 and 2 threads (AMD EPYC
with AVX2 only against the Xeon's records), and so did every downstream step, QLoRA's included (an Intel Xeon host,
2026-11-28: benchmarks/intel-xeon-host/). Under oneDNN's products (issue 87) an AMD EPYC with AVX-512 gave every entry
of an Intel Xeon's records at 1 and 2 threads, every downstream step and QLoRA's included (2026-11-29:
``amd-epyc-avx512bf16-onednn-downstream-threads{1,2}.json`` against ``intel-xeon-avx512-amx-onednn-*``), and so did
an AMD EPYC with AVX2 only under the pin, the former pin and the candidate onednn-quantized (2026-11-30:
``amd-epyc-avx2-{onednn,compatible,onednn-quantized}-downstream-threads{1,2}.json``, from ``bash
benchmarks/pin_candidates.sh``). Where bitsandbytes is not installed the QLoRA steps are recorded as skipped. The
records named ``...-threadsN.json`` without a variant, and ``bias-apart``, are the pin of 2026-11-27's (``avx2``,
``avx2-bias-apart``). Every downstream step takes the fused AdamW since 2026-12-01; before, a variant that changes
the pin's switches (``onednn-avx512``, ``avx2``, ``avx2-bias-apart``) took the unfused AdamW, whose square root goes
through MKL's VML by vendor, so ``intel-xeon-avx512-amx-onednn-avx512-downstream-*`` differ from an AMD EPYC's at
each run's first parameter after AdamW with every product equal (they are to be taken again on an Intel CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftlab.utils.cpu import PINNED  # torch-free: the variant's switches are set before torch is imported

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "studies" / "default.yaml"
# a variant: the switches it sets over the pin's, whether every nn.Linear adds its bias apart, and whether the
# step's products go through oneDNN (peftlab.models.products, the pin's)
VARIANTS = {
    "pin": ({}, False, True),
    "avx2": ({"MKL_CBWR": "AVX2,STRICT"}, False, False),
    "avx2-bias-apart": ({"MKL_CBWR": "AVX2,STRICT"}, True, False),
    "compatible": ({"MKL_CBWR": "COMPATIBLE,STRICT"}, False, False),
    "compatible-bias-apart": ({"MKL_CBWR": "COMPATIBLE,STRICT"}, True, False),
    # the pin of 2026-11-29: every Linear's products through oneDNN, a quantized base's backward in MKL's COMPATIBLE
    "onednn": ({"MKL_CBWR": "COMPATIBLE,STRICT", "PEFTLAB_PIN_PRODUCTS": "onednn"}, False, True),
    # oneDNN's products at AVX512_CORE, all else the pin of 2026-11-29's: a candidate for AVX-512 CPUs only (an
    # AVX2-only CPU cannot run them); its cost: `peftlab bench --only pin`, mode pinned_avx512
    "onednn-avx512": (
        {"MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "PEFTLAB_PIN_PRODUCTS": "onednn"},
        False,
        True,
    ),
    # the pin since 2026-11-30 (``pin``): a quantized base's backward products through oneDNN too (bitsandbytes'
    # int8 layers, peftlab's 4-bit ones), PEFTLAB_PIN_PRODUCTS=onednn-quantized or unset in a run
    "onednn-quantized": ({"MKL_CBWR": "COMPATIBLE,STRICT", "PEFTLAB_PIN_PRODUCTS": "onednn-quantized"}, False, True),
    # a candidate (2026-12-01): the pin with what it leaves to MKL (attention's and the stacked LoRA factors' batched
    # products) in MKL's AVX2 branch, 0.4 to 0.8 of their COMPATIBLE cost (benchmarks/pin_products.py); MKL's AVX2
    # branch parted the vendors at the Linears' products (issue 80), whether at these is for the records to say.
    # Its cost: `peftlab bench --only pin`, mode pinned_mkl_avx2
    "onednn-mkl-avx2": ({"MKL_CBWR": "AVX2,STRICT", "PEFTLAB_PIN_PRODUCTS": "onednn-quantized"}, False, True),
}


def digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:8]


def hook_operations(model, entries: list, also: type | None = None) -> None:
    """Hooks that append each operation's forward output and output gradient, hashed, to ``entries`` as
    autograd meets them: the model's leaves (each operation once) and the modules of type ``also``."""
    import torch

    names = {module: name or "model" for name, module in model.named_modules()}

    def forward_hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            entries.append((f"fwd {names[module]}", digest(output)))

    def backward_hook(module, grad_input, grad_output):
        if grad_output and isinstance(grad_output[0], torch.Tensor):
            entries.append((f"bwd {names[module]}", digest(grad_output[0])))

    for module in model.modules():
        if not list(module.children()) or (also is not None and isinstance(module, also)):
            module.register_forward_hook(forward_hook)
            module.register_full_backward_hook(backward_hook)


def probe(steps: int, threads: int) -> dict:
    import torch

    from peftlab.config.schema import load_config
    from peftlab.models.backbones import build_backbone
    from peftlab.utils.provenance import cpu_generation, cpu_model, cpu_vendor

    torch.set_num_threads(threads)
    cfg = load_config(REPO / "configs" / "pretrain.yaml")
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.model, 10).train()
    entries: list[tuple[str, str]] = []
    hook_operations(model, entries)
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
        "cpu_generation": cpu_generation(),  # family, model, stepping: the generation a VM's model name can hide
        "machine": platform.machine(),
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "pin": {name: os.environ.get(name) for name in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")},
        "threads": threads,
        "steps": steps,
        "all": every,
        "record": record,
    }


def linear_bias_apart(self, x):
    """``nn.Linear.forward`` as ``x @ W^T``, then ``+ b`` (the ``bias-apart`` variants)."""
    import torch

    y = torch.matmul(x, self.weight.t())
    return y if self.bias is None else y + self.bias


def uses_bitsandbytes(model) -> bool:
    return any(cls.__module__.startswith("bitsandbytes") for module in model.modules() for cls in type(module).__mro__)


def probe_downstream(steps: int, bitsandbytes: bool = True) -> dict:
    """Every configuration of the default study (its first seed's run of each): ``steps`` of peftlab's step each;
    without ``bitsandbytes`` those that quantize their base are recorded as skipped."""
    import dataclasses
    import importlib.util

    from peftlab.study.spec import load_study

    out = {}
    for spec in load_study(STUDY).runs:
        if spec.variant not in out:
            cfg = dataclasses.replace(spec.config, model=dataclasses.replace(spec.config.model, pretrained="none"))
            if cfg.quant.mode != "none" and not bitsandbytes:
                out[spec.variant] = {"skipped": f"quant.mode {cfg.quant.mode}: left out (--no-bitsandbytes)"}
            elif cfg.quant.mode != "none" and importlib.util.find_spec("bitsandbytes") is None:
                out[spec.variant] = {"skipped": f"quant.mode {cfg.quant.mode} needs bitsandbytes, not installed here"}
            else:
                out[spec.variant] = probe_run(cfg, steps)
    return out


def probe_run(cfg, steps: int) -> dict:
    """``steps`` of peftlab's step of one run config on a random base and a seeded batch, hashed."""
    import torch

    from peftlab.bench.common import Trainer
    from peftlab.training.step import training_step
    from peftlab.tuners.modules import SplitQKV

    generator = torch.Generator().manual_seed(1)
    size, chans, batch = cfg.model.img_size, cfg.model.in_chans, cfg.train.batch_size
    images = torch.randn(batch, chans, size, size, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    # every variant is a candidate pin: its step takes the fused AdamW a reproducible run takes (left to the
    # process's pin, a variant that changes the pin's switches got the unfused one, whose sqrt MKL's VML computes)
    trainer = Trainer(cfg, images, labels, "fp32", clip_grad=cfg.train.clip_grad, reproducible=True)
    model, entries = trainer.model, []

    def grad_hook(name):
        return lambda param: entries.append((f"grad {name}", digest(param.grad)))

    # the leaves, and the fused q/k/v, whose own forward computes its slices' products
    hook_operations(model, entries, also=SplitQKV)
    trained = trainer.tuner.trainable_parameters()
    for name, param in trained.items():
        param.register_post_accumulate_grad_hook(grad_hook(name))
    record = []
    for step in range(steps):
        entries.clear()
        loss, norm, _ = training_step(
            model, trainer.tuner, [(images, labels)], trainer.optimization, step=step, n_micro=1
        )
        entries += [("loss", digest(loss)), ("grad norm", digest(norm))]
        entries += [(f"param {name}", digest(p)) for name, p in trained.items()]
        record.append({"step": step, "entries": [list(e) for e in entries]})
    return {
        "bitsandbytes": uses_bitsandbytes(model),
        "adamw": "fused",  # records without it: fused where the variant kept the pin's switches, else unfused
        "all": hashlib.sha256(json.dumps(record).encode()).hexdigest()[:12],
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
    parser.add_argument("--downstream", action="store_true", help="also a step of each default-study configuration")
    parser.add_argument(
        "--no-bitsandbytes",
        action="store_true",
        help="leave out the downstream steps of a quantized base (bitsandbytes' kernels, which the pin does not reach)",
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="pin", help="how to compute (default: the pin)")
    parser.add_argument("--out", help="write the record here (JSON)")
    parser.add_argument("--compare", help="a recorded file: name the first entry that differs from it")
    args = parser.parse_args()
    switches, bias_apart, onednn = VARIANTS[args.variant]
    os.environ.update({**PINNED, **switches})  # before torch is imported: each library reads its switch once
    import torch

    if bias_apart:
        torch.nn.Linear.forward = linear_bias_apart
    # the input needs no gradient: PyTorch says the first leaf's hook sees its output's gradient alone, as wanted
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    from peftlab.models.products import onednn_products

    with onednn_products() if onednn else contextlib.nullcontext():
        result = probe(args.steps, args.threads)
        result["variant"] = args.variant
        if args.downstream:
            result["downstream"] = probe_downstream(args.steps, bitsandbytes=not args.no_bitsandbytes)
    machine = f"{result['cpu_vendor']} {result['cpu_model']}"
    print(f"{machine}: variant {args.variant}, threads {args.threads}, {args.steps} steps, pretraining {result['all']}")
    for name, step in result.get("downstream", {}).items():
        if "skipped" in step:
            print(f"  {name}: skipped ({step['skipped']})")
            continue
        kernels = "; through bitsandbytes' kernels (the pin does not reach them)" if step["bitsandbytes"] else ""
        print(f"  {name}: {step['all']}{kernels}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.compare:
        recorded = json.loads(Path(args.compare).read_text())
        other = f"{recorded['cpu_vendor']} {recorded['cpu_model']}, threads {recorded['threads']}"
        other += f", MKL_CBWR={recorded['pin']['MKL_CBWR']}"
        if "variant" in recorded:  # records from before --variant were the pin's, or named by their file
            other += f", variant {recorded['variant']}"
        print(f"against {args.compare} ({other}):")
        steps = {"pretraining": (result, recorded)}
        for name, step in result.get("downstream", {}).items():
            steps[name] = (step, recorded.get("downstream", {}).get(name))
        for name, (mine, theirs) in steps.items():
            if theirs is None or "skipped" in theirs or "skipped" in mine:
                print(f"  {name}: {'not in the recorded file' if theirs is None else 'skipped on one side'}")
                continue
            where = first_difference(mine, theirs)
            print(f"  {name}: {f'first difference at {where}' if where else 'every entry equal'}")


if __name__ == "__main__":
    main()
