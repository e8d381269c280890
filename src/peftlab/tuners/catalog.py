"""Every method peftlab runs, as ``peftlab methods`` lists it: the registry's built-ins and each PEFT type
the bridge runs (``peft:<type>``), with what it adapts, whether it merges and whether it takes a
quantized base. Reads the registry and the bridge's table only: no torch, no PEFT.

Merges: ``yes`` folds into the base weights (the run's merge check, ``export --merged``); ``no`` keeps
modules of its own (adapters, prompts); ``in place`` trains the base's own weights, which are the merged
model. ``tests/tuners/test_catalog.py`` checks the column against what each method's tuner does.
"""

from __future__ import annotations

from peftlab.tuners import TUNERS
from peftlab.tuners.peft_bridge.types import NO_MERGE, applicable, peft_types
from peftlab.tuners.plugins import distribution, entry_points, load_plugin

TARGETS = "Linear layers (method.target_modules)"
# built-in method -> (what it adapts, merges)
BUILT_IN = {
    "full": ("every weight of the model", "in place"),
    "linear": ("the classifier head only", "in place"),
    "lora": (TARGETS, "yes"),
    "adalora": (TARGETS + ", ranks pruned during training", "yes"),
    "adaptive": (TARGETS + ", ranks moved by a controller", "yes"),
    "qalora": (TARGETS + " on its own group-wise quantized base", "yes"),
    "bitfit": ("every bias", "in place"),
    "ln": ("every LayerNorm's weight and bias", "in place"),
    "ssf": ("a scale and shift after every Linear, LayerNorm and the patch embedding", "yes, where each has a bias"),
    "difffit": ("biases, LayerNorms and a scale on each block's attention and MLP branch", "yes"),
    "houlsby": ("two bottleneck adapters per block, after attention and MLP", "no"),
    "pfeiffer": ("one bottleneck adapter per block, after the MLP", "no"),
    "adaptformer": ("one scaled bottleneck adapter per block, beside the MLP", "no"),
    "convpass": ("two convolutional bypasses per block over the patch grid, beside attention and MLP", "no"),
    "repadapter": (
        "two grouped linear adapters per block, before attention and MLP",
        "yes, where the Linears after them have a bias",
    ),
    "fact_tt": ("qkv, proj, fc1 and fc2 of every block, tensor-train factors shared across blocks", "yes"),
    "fact_tk": ("qkv, proj, fc1 and fc2 of every block, Tucker factors shared across blocks", "yes"),
    "vpt": ("prompt tokens in the input of the first or every block", "no"),
    "dora": (TARGETS + ", magnitude and direction", "yes"),
    "vera": (TARGETS + ", shared frozen random projections", "yes"),
    "ia3": (TARGETS + ", rescaled (k, v and fc2 by default)", "yes"),
    "loha": (TARGETS + ", Hadamard product of low-rank factors", "yes"),
    "lokr": (TARGETS + ", Kronecker product", "yes"),
    "oft": (TARGETS + ", orthogonal rotation", "yes"),
    "boft": (TARGETS + ", butterfly orthogonal rotation", "yes"),
    "prompt_tuning": ("virtual tokens before a transformers model's input embeddings", "no"),
    "prefix_tuning": ("virtual keys and values in every layer of a transformers model", "no"),
}
QUANTIZED_OWN = {"qalora": "its own group-wise"}  # quantizes its base itself, not through bitsandbytes


def method_rows() -> list[dict]:
    """One row per method: name, source (built-in, PEFT, plugin), adapts, merges, quantized base."""
    rows = []
    for name, spec in TUNERS.items():
        if name == "peft":  # the bridge itself: its rows are the types it runs
            continue
        adapts, merges = BUILT_IN[name]
        quantized = QUANTIZED_OWN.get(name) or ("bitsandbytes" if spec.config_cls.quantizable else "no")
        rows.append({"name": name, "source": "built-in", "adapts": adapts, "merges": merges, "quantized": quantized})
    bridge = TUNERS["peft"].config_cls
    for peft_type in applicable():
        rows.append(
            {
                "name": f"peft:{peft_type}",
                "source": f"PEFT ({peft_types()[peft_type]['config']})",
                "adapts": TARGETS,
                "merges": "no" if peft_type in NO_MERGE else "yes",
                "quantized": "bitsandbytes" if bridge.quantizable else "no",
            }
        )
    return rows + plugin_rows()


def plugin_rows() -> list[dict]:
    """A row per ``peftlab.methods`` entry point, each plugin imported (its config, not its model module);
    a broken one's row says what is wrong (``error``), and the others are listed all the same."""
    rows = []
    for name, eps in entry_points().items():
        spec = load_plugin(name)
        source = "plugin " + " and ".join(distribution(ep) for ep in eps)
        if isinstance(spec, Exception):
            rows.append({"name": name, "source": source, "adapts": f"BROKEN: {spec}", "merges": "-", "quantized": "-"})
            rows[-1]["error"] = str(spec)
            continue
        cls = spec.config_cls
        doc = (cls.__doc__ or "").strip().splitlines()
        declared = doc[0] if doc and not doc[0].startswith(f"{cls.__name__}(") else "(not declared by the plugin)"
        adapts, merges = getattr(cls, "adapts", declared), getattr(cls, "merges", "(not declared by the plugin)")
        quantized = "bitsandbytes" if cls.quantizable else "no"
        rows.append({"name": name, "source": source, "adapts": adapts, "merges": merges, "quantized": quantized})
    return rows


def table_text(rows: list[dict]) -> str:
    """The rows as aligned text columns."""
    columns = [("name", "method"), ("source", "source"), ("merges", "merges"), ("quantized", "quantized base")]
    columns.append(("adapts", "adapts"))
    widths = {key: max(len(title), *(len(r[key]) for r in rows)) for key, title in columns}
    lines = ["  ".join(title.ljust(widths[key]) for key, title in columns).rstrip()]
    lines += ["  ".join(r[key].ljust(widths[key]) for key, _ in columns).rstrip() for r in rows]
    return "\n".join(lines) + "\n"
