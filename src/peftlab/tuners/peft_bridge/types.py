"""PEFT's method types as the bridge (``method.name: peft``) sees them: each type's config class and
its own fields, whether peftlab runs it, and why not where it does not. No torch, no PEFT here: a
config is checked against ``types.json``, which is generated from the installed PEFT and checked
against it by ``tests/tuners/test_peft_bridge.py``. Regenerate it, and docs/methods/peft-types.md, with::

    PYTHONPATH=src python -m peftlab.tuners.peft_bridge.types --write

A type applies when its layers adapt ``nn.Linear`` through ``target_modules`` as LoRA does; the
others are in ``REFUSED`` with the reason, each decided from PEFT's sources (``peft/tuners/<name>/``).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path

TABLE = Path(__file__).with_name("types.json")
DOCS = "docs/methods/peft-types.md"

PROMPT_LEARNING = (
    "prompt learning: virtual tokens fed to a transformers model's embeddings or attention, which peftlab runs "
    "by its own path (method.name: prompt_tuning or prefix_tuning), not through target_modules"
)
# type -> why the bridge cannot run it (one line, said when a config names it)
REFUSED = {
    "PROMPT_TUNING": PROMPT_LEARNING,
    "MULTITASK_PROMPT_TUNING": PROMPT_LEARNING + "; it also needs a task id with every batch",
    "P_TUNING": PROMPT_LEARNING,
    "PREFIX_TUNING": PROMPT_LEARNING,
    "CPT": PROMPT_LEARNING + "; its loss needs the token type masks of in-context examples",
    "CARTRIDGE": PROMPT_LEARNING + " (a trained KV cache prefix)",
    "ADAPTION_PROMPT": "it adapts the attention modules of Llama-like decoders (LLaMA-Adapter), not nn.Linear layers",
    "XLORA": "it mixes LoRA adapters trained before (a gating network over several adapters), not a method that "
    "trains on its own",
    "POLY": "it routes several LoRA skills per task and needs a task id with every batch",
    "TRAINABLE_TOKENS": "it trains rows of an embedding matrix (new tokens), not nn.Linear layers",
    "LN_TUNING": "it tunes LayerNorms, not nn.Linear layers: use method.name: ln",
    "ADALORA": "its rank allocation needs update_and_allocate after every step and a total step count: use "
    "method.name: adalora, which calls both",
    "ADAMSS": "it clusters each weight's subspaces with scikit-learn, which peftlab's lock does not install (and its "
    "subspace allocation, ASA, needs update_and_allocate after every step, a hook peftlab calls only for adalora)",
    "FROD": "its init decomposes the base weights of every layer (SVD), which peftlab's size check before every run "
    "cannot read: it applies the method on the meta device, where no weight has values",
    "SHIRA": "its init picks the trained entries of each weight with torch.nonzero, which peftlab's size check before "
    "every run cannot run: it applies the method on the meta device, where nonzero has no result",
    "SHADOW": "it trains a second transformers model beside the base (shadow_model), with an auxiliary loss peftlab "
    "does not add",
}
# type -> why its init cannot run on the meta device, where the size check before every run applies the
# method (tuners/params.py): counted on the CPU instead, once its sizes are bounded (params.check_model_size:
# its ranks, and SHARED_SIZES)
CPU_COUNTED = {
    "BOFT": "it sets its butterfly permutation matrices entry by entry (Tensor.item), from the layers' widths",
    "UNILORA": "it counts how often each entry of its vector bank is drawn (torch.bincount)",
}
# type -> its options that size tensors shared by every layer (a vector bank), bounded before it is counted on the
# CPU, each with the fp32 words an entry takes there: UniLoRA's bank, numpy's draw of its indices, their counts and
# scales (12.4 bytes an entry measured with theta_d_length 3e7)
SHARED_SIZES = {"UNILORA": {"theta_d_length": 4}}
# type -> why PEFT's tuner has no merge into the base weights (the run has no merge check, export --merged
# writes the base with the adapter modules)
NO_MERGE = {
    "LILY": "a router mixes its shared up-projections by each input's hidden states, so the update is no fixed weight",
}
# type -> why, with PEFT's default init, the adapted model does not start as its base (as VPT's prompts)
NO_IDENTITY = {
    "FOURIERFT": "PEFT draws its spectral coefficients from a normal distribution (init_weights: true starts at zero)",
    "VBLORA": "both factors are mixtures of the one random vector bank, chosen by random logits",
    "UNILORA": "both factors index the one vector bank, drawn uniform in +-init_theta_d_bound (never zero)",
    "C3A": "PEFT draws its circular kernels xavier-uniform (init_weights: true starts at zero)",
}
# options the bridge gives a type unless method.options sets them: IA3 rescales the outputs of every target
# (no feed-forward module among them)
DEFAULT_OPTIONS = {"IA3": {"feedforward_modules": []}}
# option -> value -> why the bridge cannot run it (a value PEFT's types allow)
REFUSED_VALUES = {
    "init_lora_weights": {
        "loftq": "LoftQ quantizes and decomposes each base weight on a CUDA device with bitsandbytes (PEFT's "
        "loftq_init), which the size check before every run, on the meta device, cannot run (use method.name: "
        "lora on a quantized base, quant.mode: nf4)",
        "eva": "EVA's init needs PEFT's initialize_lora_eva_weights over the training data, which peftlab does not "
        "call: the run would be plain LoRA with B = 0",
        "corda": "CorDA's init needs PEFT's preprocess_corda over the training data, which peftlab does not call",
    },
}
# fields of PeftConfig itself or set by peftlab from method.target_modules, never options
RESERVED = {
    "peft_type": "the bridge sets it from method.peft_type",
    "task_type": "peftlab builds the model and its head",
    "inference_mode": "peftlab trains the adapter",
    "base_model_name_or_path": "peftlab builds the model",
    "revision": "peftlab builds the model",
    "auto_mapping": "peftlab builds the model",
    "peft_version": "PEFT writes it",
    "target_modules": "use method.target_modules (a preset or a list of module names)",
    "exclude_modules": "use method.target_modules",
    "layers_to_transform": "use method.target_modules",
    "layers_pattern": "use method.target_modules",
    "modules_to_save": "peftlab trains the head in full",
    "fan_in_fan_out": "peftlab's targets are nn.Linear layers (out x in weights)",
}


@functools.cache
def peft_types() -> dict[str, dict]:
    """``{type: {"config": class name, "fields": [its dataclass fields], "types": {field: its type}}}`` for
    every PEFT type, as the installed PEFT had them when ``types.json`` was written (``kind`` says how a
    type is written there)."""
    return json.loads(TABLE.read_text())


def kind(tp) -> object:
    """A PEFT config field's annotation as JSON: ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"null"``,
    ``"any"``; ``{"list": kind}``, ``{"dict": kind}`` (of values), ``{"literal": [values]}``, ``{"union": [kinds]}``.
    A config class of PEFT's own (LoftQConfig, EvaConfig) is a mapping of its fields, as PEFT reads it."""
    import dataclasses
    import types as pytypes
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, float, bool, str):
        return tp.__name__
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return {"literal": list(args)}
    if origin in (typing.Union, pytypes.UnionType):
        kinds = [kind(arg) for arg in args]
        kinds = [k for i, k in enumerate(kinds) if k not in kinds[:i]]
        # in one order whatever the process: typing caches a Union by its members, so Union[list[str], str] comes
        # back in the order the first equal Union anything in this process made had (null last)
        return {"union": sorted(kinds, key=lambda k: (k == "null", json.dumps(k, sort_keys=True)))}
    if tp in (list, tuple) or origin in (list, tuple):
        return {"list": kind(args[0]) if args else "any"}
    if tp is dict or origin is dict:
        return {"dict": kind(args[1]) if len(args) == 2 else "any"}
    if dataclasses.is_dataclass(tp):
        return {"dict": "any"}
    return "any"


def matches(value, expected) -> bool:
    """True when ``value`` (what YAML gave: scalars, tuples of them, mappings of them) is of kind ``expected``.
    A literal written ``name_[number of ...]`` (PEFT's ``pissa_niter_[number of iters]``) stands for the
    name followed by digits."""
    if expected == "any":
        return True
    if isinstance(expected, str):
        if expected == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if expected == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, {"bool": bool, "str": str, "null": type(None)}[expected])
    (form, inner), *_ = expected.items()
    if form == "union":
        return any(matches(value, k) for k in inner)
    if form == "literal":
        return any(type(value) is type(v) and (value == v or numbered(value, v)) for v in inner)
    if form == "list":
        return isinstance(value, (tuple, list)) and all(matches(v, inner) for v in value)
    return isinstance(value, dict) and all(matches(v, inner) for v in value.values())


def numbered(value, literal) -> bool:
    """True for ``pissa_niter_4`` against PEFT's literal ``pissa_niter_[number of iters]``."""
    if not isinstance(literal, str) or "_[" not in literal:
        return False
    return re.fullmatch(re.escape(literal.split("[")[0]) + r"\d+", value) is not None


def described(expected) -> str:
    """``expected`` (a ``kind``) in words, for the line that refuses a value."""
    if isinstance(expected, str):
        words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
        return words.get(expected, {"null": "null", "any": "any value"}.get(expected, expected))
    (form, inner), *_ = expected.items()
    if form == "union":
        return " or ".join(described(k) for k in inner)
    if form == "literal":
        return "one of " + ", ".join(repr(v) for v in inner)
    if form == "list":
        return "a list" + ("" if inner == "any" else f" of values each {described(inner)}")
    return "a mapping" + ("" if inner == "any" else f" of names to values each {described(inner)}")


def applicable() -> list[str]:
    """The types the bridge runs, in PEFT's order."""
    return [t for t in peft_types() if t not in REFUSED]


def option_names(peft_type: str) -> list[str]:
    """The fields of the type's config class that ``method.options`` may set."""
    return [f for f in peft_types()[peft_type]["fields"] if f not in RESERVED]


def read_installed() -> dict[str, dict]:
    """The table from the installed PEFT (imports it)."""
    import dataclasses
    import typing

    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils.peft_types import PeftType

    table = {}
    for peft_type in PeftType:
        cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        table[peft_type.value] = {
            "config": cls.__name__,
            "fields": fields,
            "types": {f: kind(hints[f]) for f in fields if f not in RESERVED and f in hints},
        }
    return table


def table_text(table: dict[str, dict]) -> str:
    return json.dumps(table, indent=1) + "\n"


def docs_text(table: dict[str, dict], version: str) -> str:
    """docs/methods/peft-types.md: every type with ✓ or ✗ and the reason for each ✗."""
    rows = []
    for peft_type, entry in table.items():
        if peft_type in REFUSED:
            rows.append(f"| `{peft_type}` | `{entry['config']}` | ✗ {REFUSED[peft_type]} | | |")
            continue
        start = "no: " + NO_IDENTITY[peft_type] if peft_type in NO_IDENTITY else "yes"
        merge = "no: " + NO_MERGE[peft_type] if peft_type in NO_MERGE else "yes"
        rows.append(f"| `{peft_type}` | `{entry['config']}` | ✓ | {start} | {merge} |")
    ok = sum(t not in REFUSED for t in table)
    return (
        "# PEFT's methods through the bridge\n\n"
        f"<!-- generated by PYTHONPATH=src python -m peftlab.tuners.peft_bridge.types --write -->\n\n"
        f"PEFT {version} has {len(table)} method types (`peft.utils.peft_types.PeftType`). `method.name: peft` "
        f"runs {ok} of them by name (✓), each through the injection path every PEFT-backed method takes "
        "(`tuners/peft_injection.py`: the presets, the q/v slices of timm's fused qkv, HF vision and text models, "
        "merge where PEFT's tuner merges, the adapter files and exports):\n\n"
        "```yaml\nmethod:\n  name: peft\n  peft_type: FOURIERFT          # a PeftType name\n"
        "  target_modules: standard     # peftlab's presets or module names, as for lora\n"
        "  options: {n_frequency: 100}  # fields of the type's own config class (FourierFTConfig)\n```\n\n"
        "`method.options` takes the fields of the type's config class, except those peftlab sets: "
        + ", ".join(f"`{f}`" for f in RESERVED)
        + ". An unknown option is one line naming the allowed ones; a value of another type than the field's "
        "annotation in PEFT's config class (recorded in `types.json`) is one line naming it, before PEFT reads it; "
        "a value PEFT's config refuses is one line with PEFT's reason. A `rank_pattern`'s values are ranks, "
        "bounded with `r` by the size check before every run, which applies the type on the meta device. Refused "
        "values: "
        + "; ".join(f"`{k}: {v}` ({why})" for k, values in REFUSED_VALUES.items() for v, why in values.items())
        + ". `peftlab methods` lists the ✓ types as `peft:<type>` rows.\n\n"
        "`tests/tuners/test_peft_bridge.py` runs every ✓ type on a tiny timm ViT (q and v slices of the fused "
        "qkv; whole `attn.proj` and `mlp.fc2`, whose PEFT-format files PEFT loads) and a tiny GPT-2 through the "
        "checks every family cell passes (`testkit.check_cell`): the adapted model starts as its base (with PEFT's "
        "default init, where the table says so), every tensor it trains gets a gradient, its merged model "
        "computes what it does and loads into the plain architecture, and PEFT loads its PEFT-format files.\n\n"
        "| type | config class | runs through `method.name: peft` | starts as the base | merges |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write types.json and {DOCS} from the installed PEFT")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    table = read_installed()
    if not args.write:
        sys.stdout.write(docs_text(table, version("peft")))
        return 0
    TABLE.write_text(table_text(table))
    Path(DOCS).write_text(docs_text(table, version("peft")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
