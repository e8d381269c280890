"""``peftlab bench``: what peftlab costs, measured as ratios side by side in one process.

Every ratio compares two things timed in alternation (A, B, A, B, ...) after warm-up, so
drift of the machine cancels; each figure is the median of the repeats, with the spread
(min-max) beside it. Peak RSS is measured in separate worker processes, one per method.

- peak: the best measured matmul throughput for the dtype (square matmuls, several sizes).
- P1: peftlab's training step (the recipe's own ``training.step.training_step``) over a minimal
  hand-written PEFT + timm step on the same PEFT model (LoRA on timm's whole ``qkv``), and the cost
  of adapting exactly the q and v slices (split qkv) over that.
- P2: LoRA r=8 (q, v) step / full fine-tuning step.
- P3a: stored bytes of the quantized block Linears / their fp32 bytes (int8, nf4, nf4 + double
  quant, fp4), counted from the bitsandbytes layers' state dicts.
- P3b: peak RSS above the post-import baseline while training a ViT-Large (random weights, batch
  4, gradient checkpointing), each method in its own process: QLoRA (nf4 + double quant) /
  fp32 LoRA and / full fine-tuning; the model-building peak apart.
- P3c: QLoRA nf4 training step / fp32 LoRA step (interleaved with the P1/P2 steps).
- Adaptive ranks: AdaLoRA step and importance-controller step / LoRA step at the same built rank,
  reallocating on every step (interleaved with the others).
- methods: every method of the TUNERS registry (read at run time), its training step / LoRA r=8 on q, v,
  all timed in one round-robin after a warm-up step each, with its median step seconds and trainable
  parameters; the few options a method needs come from ``methods.METHOD_OPTIONS``, and a method that
  cannot run on the bench's model or device gets a row with the error instead of a number.
  ``peftlab bench --only methods`` measures just this figure.
- P4: merged-model latency / base latency, and unmerged adapter latency / base latency.
- P4q: QA-LoRA (int4, group 32): the merged model (still quantized) / the same quantized base
  without adapters (the merge adds nothing), and that quantized model / the fp32 merged model.
- P5: model FLOP/s (counted by torch.utils.flop_counter.FlopCounterMode over one training
  step) / measured matmul peak.
- compile: the compiled (``train.compile``, inductor) / eager step for LoRA and full, and P2
  between the compiled steps; the compile time (first compiled step less an eager one) apart.
- text: a GPT-2-shaped causal LM (random weights, 12 layers, width 768, batch 8 x 128 tokens) trained with
  LoRA r=8 on its fused ``c_attn`` through peftlab's build, tuner and recipe step / the same LoRA in a bare
  transformers + PEFT loop, wall and CPU time interleaved, tokens/s of each; ``--only text`` measures
  just this figure and ``--png`` draws it.
- ``--device cuda``: the same figures on a GPU, against the GPU's spec-sheet peak; the memory
  figures (peak RSS of host processes) and P6 are CPU-only and left out there.
- P6: a run's fixed cost in CPU seconds (all but its training steps and evaluation passes), by
  part, on the default study's LoRA run in a worker forked as a study forks them (``bench.fixed_cost``).
- data: images/s of the data path alone (an ImageFolder of JPEGs written here, decoded, resized,
  augmented and normalised as training gets them, with ``data.num_workers``) / images/s of a
  deit_tiny_patch16_224 training step (LoRA r=8, batch as given), interleaved; >= 2 means the
  data path never limits training. ``peftlab bench --only data`` measures just this figure.

The package: ``run.py`` (``FIGURES``, the list of figures in measuring order, each a function of
the bench returning its part of the report; ``run_bench`` loops over it), ``common.py``
(``Trainer``, configs, spreads), ``peak.py``, ``steps.py``, ``methods.py``, ``weights.py``, ``memory.py``,
``data.py``, ``text.py`` (the figures' measurements), ``report.py`` (the text and JSON report) and ``plot.py``
(the text figure as a PNG).
"""
