"""Export a trained run: a plain timm state dict (merged, fp32), or the merged quantized model.

``export_merged(run_dir, out)`` writes the merged model with float weights: a plain timm
state dict that timm loads with no peftlab code. On a quantized base those weights are
dequant(W) + ΔW. ``export_merged(run_dir, out, quantized=True)`` writes the merged model
quantized: for QLoRA re-quantized, in bitsandbytes' own serialization (packed codes, absmax,
nested statistics, code book); for QA-LoRA with the update folded into the zeros / offsets and
the trained codes unchanged (``{layer}.codes`` packed uint8, ``.scales``, ``.zeros`` or
``.offsets``, ``.codebook`` for nf4 / fp4, ``.bias``; the header also records the format, the
group size and every quantized layer's shape). The safetensors header records the run config and
how the run made its test images (``preprocessing``: channels, resize, interpolation, no crop, and
data.normalize's mean and std, also under ``mean``, ``std``, ``interpolation``); an HF image model's
directory holds the same record in peftlab_preprocessing.json. Every export names the run's classes (result.json's
``provenance.data.class_names``): ``class_names`` (JSON) in a safetensors header (merged, unmerged, quantized, and
the PEFT adapter's adapter_model.safetensors), an HF model's ``id2label`` in its config.json.
Load and run either with ``load_quantized(path)``::

    from peftlab.training.export import load_quantized
    model = load_quantized("merged-nf4.safetensors").eval()   # a timm model with bnb Linears
    logits = model(images)                                     # images as peftlab's data gives them

A method that does not merge (the adapters, VPT) is written unmerged: the base's weights with the
method's modules, under the trained model's own keys (format ``peftlab-unmerged``), one note on
stderr saying so; ``load_unmerged(path)`` rebuilds the model from the header's config and loads it.
Prompt and prefix tuning are refused in one line: their virtual tokens are inputs, not weights, so
their export is the adapter in PEFT's format (``export_peft``, ``peftlab export RUN --peft DIR``).

A finished run is used here too: ``load_trained(run_dir)`` rebuilds its tuned model (``evaluate.predict``, what
``peftlab predict`` calls, classifies image files with it).
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open

from peftlab.config.checks import MAX_INT, shown
from peftlab.config.schema import config_hash, dump_config, load_config
from peftlab.config.sections import architecture_only
from peftlab.data.build import eval_preprocessing
from peftlab.models.backbones import HF_SOURCES, HFLogits, build_backbone, input_spec, model_inputs, timm_kwargs
from peftlab.models.hf_config import TOKENIZER_FILES
from peftlab.models.weights import opened_weights, read_safetensors, write_safetensors
from peftlab.quant.bases import (
    dequantized_linear,
    is_quantized_linear,
    load_pending,
    load_quantized_state,
    quantize_base,
)
from peftlab.quant.load import build_for_saved_state
from peftlab.training.run_result import RESULT_FILE, RunResult, parse_result
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.build import build_tuned
from peftlab.tuners.modules import replace_modules, split_qkv
from peftlab.tuners.peft_injection import peft_export, unshared
from peftlab.tuners.qalora.export import groupwise_metadata, load_groupwise
from peftlab.utils.errors import UserError, WeightsError
from peftlab.utils.files import check_output, one_line, read_json, shown_path, write_atomic

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # the names PEFT looks for
PREPROCESSING_FILE = "peftlab_preprocessing.json"  # an HF image model's export: how its test images were made
# Every export records its run's id (the config hash, a study's name of the run folder): a safetensors header's
# field, an HF model's config.json key. Two identical runs share it, and their exports are the same bytes.
EXPORT_RUN = "peftlab_run"
RUN_ID = re.compile(r"[0-9a-f]{12}")
# the files an export writes into its folder: PEFT's adapter, an HF model's save_pretrained (unsharded) with ours
FOLDER_EXPORTS = {
    "peft": (PEFT_CONFIG, PEFT_WEIGHTS),
    "hf": ("config.json", "generation_config.json", "model.safetensors", PREPROCESSING_FILE, *TOKENIZER_FILES),
}


def conv1d_from_linear(linear: torch.nn.Linear) -> torch.nn.Module:
    """transformers' ``Conv1D`` computing what ``linear`` computes (``linear_from_conv1d`` undone)."""
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(linear.out_features, linear.in_features)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.t())
        conv.bias.copy_(linear.bias)
    return conv


def save_hf_model(model: HFLogits, out: str | Path) -> None:
    """``model``'s transformers model as ``save_pretrained`` writes it, in the layout transformers builds:
    GPT-2's Linears (``build_hf_text``) written back as its Conv1D modules, (in, out) weights."""
    import copy

    inner, names = model.model, getattr(model, "conv1d_names", [])
    if names:
        inner = copy.deepcopy(inner)
        for name in names:
            parent, _, child = name.rpartition(".")
            owner = inner.get_submodule(parent) if parent else inner
            setattr(owner, child, conv1d_from_linear(getattr(owner, child)))
    inner.save_pretrained(out)


def write_peft_adapter(tuner, out_dir: Path, header: dict[str, str] | None = None) -> bool:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``out_dir`` so that
    ``peft.PeftModel.from_pretrained(base, out_dir)`` loads the adapter on the plain base model
    (timm's fused qkv, no peftlab code); False, writing nothing, where PEFT cannot load it (``peft_export``
    says why, and the run's warning says the same). ``header``: the weights' header fields (``peft_header``)."""
    export = peft_export(tuner)
    if isinstance(export, str):
        return False
    config, state = export
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", **(header or {})}
    write_safetensors(out_dir / PEFT_WEIGHTS, state, metadata)
    write_atomic(out_dir / PEFT_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2, sort_keys=True)))
    return True


def export_peft(run_dir: Path, out_dir: Path, replace: bool = False) -> Path:
    """A finished run's adapter in PEFT's format (for runs trained before the run directory held it); a folder
    holding another run's adapter is replaced only with ``replace``."""
    check_output(out_dir, True, "--peft")
    cfg = load_config(Path(run_dir) / "config.yaml", base_dir=Path.cwd())
    check_replaceable(Path(out_dir), config_hash(cfg), "peft", "--peft", replace)
    tuner = load_trained(Path(run_dir))
    result = completed_result(Path(run_dir))
    # the input as the recipe made it: the tuned model's patch embedding may be wrapped (SSF's), no Conv2d to read
    spec = model_inputs(cfg.model, cfg.data.max_length)
    header = peft_header(cfg, spec, num_classes_of(cfg, result, run_dir), class_names_of(result))
    if not write_peft_adapter(tuner, Path(out_dir), header):
        raise UserError(f"run {run_dir}: {peft_export(tuner)}; `peftlab export --merged` works")
    return Path(out_dir)


def load_trained(run_dir: str | Path):
    """Rebuild a run's tuned model from its config.yaml and adapter.safetensors (``run_dir``: a path or its text)."""
    run_dir = Path(run_dir)
    result = completed_result(run_dir)
    cfg = load_config(run_dir / "config.yaml", base_dir=Path.cwd())  # relative paths: of runs written before 2026-11
    if result["config"]["method"].get("name") != cfg.method.name:
        raise WeightsError(
            f"{run_dir / 'result.json'} does not match {run_dir / 'config.yaml'}: its method is not {cfg.method.name!r}"
        )
    num_classes = num_classes_of(cfg, result, run_dir)
    # as the recipe builds it: a damaged count is one line, a base without weights file the same random model
    tuner, _ = build_tuned(
        cfg.model,
        cfg.method,
        num_classes,
        TunerContext(total_steps=result["step"], device=torch.device("cpu"), quant=cfg.quant),
        seed=cfg.seed,
    )
    state = read_safetensors(run_dir / "adapter.safetensors")
    try:
        tuner.load_adapter_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:  # missing or extra keys, wrong shapes
        raise WeightsError(
            f"{run_dir / 'adapter.safetensors'} does not match the run's config ({one_line(err)[:300]})"
        ) from None
    tuner.run_dir = run_dir  # what its display names
    return tuner


def completed_result(run_dir: Path) -> RunResult:
    """The run's result.json, checked for the fields an export reads before anything is built. The
    raw JSON is checked first, so a damaged field is named with the value it holds."""
    result = read_json(run_dir / RESULT_FILE)
    if result is None or result.get("status") != "completed":
        raise UserError(
            f"run directory {run_dir} holds no completed run (result.json missing, corrupt or not completed)"
        )
    step = result.get("step")
    if type(step) is not int or not 0 <= step <= MAX_INT:
        raise UserError(
            f"{run_dir / 'result.json'} is damaged: its step is {shown(step)}, expected an integer in [0, {MAX_INT}]"
        )
    if not isinstance(result.get("config"), dict) or not isinstance(result["config"].get("method"), dict):
        raise UserError(
            f"{run_dir / 'result.json'} is damaged: its config is {shown(result.get('config'))}, expected "
            "the run's config (a mapping with a method section)"
        )
    return parse_result(result)


def num_classes_of(cfg, result: dict, run_dir: Path | str = "the run") -> int:
    """The classes of the run's head, from its result; 0 for a causal LM, whose head is its vocabulary's."""
    if cfg.model.task == "causal-lm":
        return 0
    try:
        number = cfg.model.num_classes or result["provenance"]["data"]["num_classes"]
    except (KeyError, TypeError):
        number = None
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_INT:
        raise UserError(f"{run_dir}/result.json does not say the run's number of classes (provenance.data.num_classes)")
    return number


def class_names_of(result: dict) -> list[str] | None:
    """The run's class names, index by index, as its data named them (result.json's
    ``provenance.data.class_names``); None where the record holds none (a causal LM, a run of an older version)."""
    provenance = result.get("provenance")
    data = provenance.get("data") if isinstance(provenance, dict) else None
    names = data.get("class_names") if isinstance(data, dict) else None
    if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
        return names
    return None


def peft_header(cfg, spec, num_classes: int, class_names: list[str] | None) -> dict[str, str]:
    """A PEFT adapter's header: its run (``EXPORT_RUN``), the class names and, for a timm model (``spec``: its
    ``InputSpec``), its base (``base_pretrained``: model.pretrained) and how to build and feed it (``model_header``),
    as a merged export's header says."""
    if cfg.model.source != "timm":
        return {EXPORT_RUN: config_hash(cfg), **class_names_metadata(class_names)}
    return {
        EXPORT_RUN: config_hash(cfg),
        "base_pretrained": cfg.model.pretrained,
        **model_header(cfg, spec, num_classes),
        **class_names_metadata(class_names),
    }


def model_header(cfg, spec, num_classes: int) -> dict[str, str]:
    """timm's model name and arguments, the input size (``spec``: the model's ``InputSpec``) and how the run made
    its test images (``preprocessing``: data.normalize's mean and std, not the model's defaults, also under
    ``mean``, ``std``, ``interpolation``)."""
    preprocessing = eval_preprocessing(cfg.data, spec.img_size, spec.in_chans, spec.mean, spec.std)
    return {
        "timm_model": cfg.model.name,
        "timm_kwargs": json.dumps(timm_kwargs(cfg.model, num_classes)),
        "input_size": json.dumps([spec.in_chans, spec.img_size, spec.img_size]),
        "mean": json.dumps(preprocessing["mean"]),
        "std": json.dumps(preprocessing["std"]),
        "interpolation": preprocessing["interpolation"],
        "preprocessing": json.dumps(preprocessing),
    }


def class_names_metadata(class_names: list[str] | None) -> dict[str, str]:
    """A safetensors header's ``class_names`` field (JSON), or nothing where the names are unknown."""
    return {"class_names": json.dumps(class_names)} if class_names else {}


def check_merge_passed(run_dir: Path, result: dict | None, quantized: bool) -> None:
    """Refuse to export a merge that the run's own merge check found wrong (``--force`` skips this)."""
    merge = (result or {}).get("merge") if isinstance(result, dict) else None
    if not isinstance(merge, dict):
        return
    key, diff = ("requantized_ok", "requantized_max_abs_diff") if quantized else ("ok", "max_abs_diff")
    if merge.get(key) is False:
        raise UserError(
            f"{run_dir}/result.json says the run's merge check failed (max |diff| {merge.get(diff)} > "
            f"tolerance {merge.get('tolerance')}): the merged model would not be the model that was "
            "evaluated; give --force to export it anyway"
        )


def check_finite_weights(model: torch.nn.Module, run_dir: Path) -> None:
    """A model to write holds no NaN or inf (an adapter file damaged after training would merge
    into one without a word)."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(
                f"the model exported from {run_dir} holds non-finite values (NaN or inf) in {name!r}; "
                "check the run's adapter.safetensors"
            )


def check_mergeable(cfg, run_dir: Path) -> None:
    """One UserError line for a prompt-learning run (prompt or prefix tuning): its virtual tokens are
    inputs of every forward, which no weight of the model can hold, so nothing merges."""
    virtual = getattr(cfg.method, "num_virtual_tokens", None)
    if virtual is not None:
        raise UserError(
            f"run {run_dir} used method {cfg.method.name!r}, whose {virtual} virtual tokens fold into no weight "
            "of the model: nothing to merge; use --peft DIR instead (PEFT's adapter format, which "
            "peft.PeftModel.from_pretrained loads on the plain transformers model)"
        )


def export_merged(
    run_dir: Path, out: Path, quantized: bool = False, force: bool = False, replace: bool = False
) -> Path:
    """``replace``: write over another run's export at ``out``, which is refused otherwise."""
    cfg = load_config(run_dir / "config.yaml")
    check_mergeable(cfg, run_dir)  # before anything is built or created at ``out``
    hf = cfg.model.source in HF_SOURCES and not quantized
    if out.is_dir() and not hf:
        raise UserError(f"--merged {out} is a directory: expected the path of a .safetensors file to write")
    if hf and out.exists() and not out.is_dir():
        raise UserError(f"--merged {out} is a file: an HF model exports to a directory (save_pretrained)")
    flag = "--quantized" if quantized else "--merged"
    check_output(out, hf, flag)
    run = config_hash(cfg)
    check_replaceable(out, run, "hf" if hf else None, flag, replace)
    result = completed_result(run_dir)
    if not force:
        check_merge_passed(run_dir, result, quantized)
    tuner = load_trained(run_dir)
    if quantized and not tuner.quantized:
        raise UserError(f"--quantized needs a run on a quantized base; {run_dir} has quant.mode=none")
    merged = tuner.merged_model(quantized=quantized) if tuner.is_adapter else None
    if merged is None and tuner.merge_refusal():
        raise UserError(
            f"--merged: run {run_dir} does not merge: {tuner.merge_refusal()}; its adapter.safetensors holds "
            "the trained model unmerged (peftlab.training.export.load_trained rebuilds it)"
        )
    unmerged = tuner.is_adapter and merged is None
    if unmerged:  # adapters, VPT's prompts: modules the base's weights cannot absorb, written with the base
        print(
            f"peftlab: note: method {tuner.name!r} does not merge into the base weights: {out} holds the base with "
            "the method's modules (load with peftlab.training.export.load_unmerged)",
            file=sys.stderr,
        )
        model = tuner.model
    elif merged is not None:
        model = merged
    else:
        model = copy.deepcopy(tuner.model)
        if not quantized:  # a linear probe on a quantized base: float weights
            replace_modules(model, [n for n, m in model.named_modules() if is_quantized_linear(m)], dequantized_linear)
    check_finite_weights(model, run_dir)
    num_classes = num_classes_of(cfg, result, run_dir)
    class_names = class_names_of(result)
    if hf:  # a directory that transformers' AutoModelFor...Classification (or CausalLM).from_pretrained loads
        if class_names and len(class_names) == num_classes and cfg.model.task != "causal-lm":
            model.model.config.id2label = dict(enumerate(class_names))  # transformers' names of the labels
            model.model.config.label2id = {name: i for i, name in enumerate(class_names)}
        setattr(model.model.config, EXPORT_RUN, run)  # config.json records the run, as a header does
        save_hf_model(model, out)
        if cfg.model.source == "hf-text":  # its inputs are its tokenizer's: the run's own, padding as the run padded
            model_inputs(cfg.model, cfg.data.max_length).tokenizer.save_pretrained(out)
        else:
            preprocessing = json.dumps(run_preprocessing(cfg, model), indent=2)
            write_atomic(out / PREPROCESSING_FILE, lambda tmp: Path(tmp).write_text(preprocessing + "\n"))
        return out
    metadata = {
        "format": "timm",
        EXPORT_RUN: run,
        "peftlab_config": dump_config(cfg),
        "num_classes": str(num_classes),
        **model_header(cfg, input_spec(model), num_classes),
        **class_names_metadata(class_names),
    }
    if unmerged:
        metadata["format"] = "peftlab-unmerged"
    if quantized:
        metadata.update(groupwise_metadata(model) or {"format": "peftlab-bitsandbytes"})
    state = unshared(model.state_dict())  # a module shared by several layers (Lily's) is written once each
    write_safetensors(out, state, metadata)
    return out


def check_replaceable(out: Path, run: str, folder: str | None, flag: str, replace: bool) -> None:
    """Before anything is built: a UserError line when ``out`` (a file; or a ``folder`` of ``FOLDER_EXPORTS``' kind)
    holds an export that is not run ``run``'s, naming whose it is; the same run's export is written again, and
    another's only with ``replace`` (``--replace``)."""
    if replace:
        return
    held = [out] if folder is None else [out / name for name in FOLDER_EXPORTS[folder]]
    held = [path for path in held if os.path.lexists(path)]
    if not held:
        return
    records = [recorded_run(path) for path in held if path.suffix in (".safetensors", ".json")]
    owner = next((record for record in records if record), None)
    if owner == run:
        return
    names = ", ".join(path.name for path in held)
    if owner:
        whose = f"holds run {owner}'s export{f' ({names})' if folder else ''}, not run {run}'s"
    else:
        whose = f"{f'holds {names}' if folder else 'exists'} with no peftlab run recorded (not run {run}'s export)"
    raise UserError(f"{flag} {shown_path(out)} {whose}: give --replace to write over it, or another {flag}")


def recorded_run(path: Path) -> str | None:
    """The run id an export at ``path`` records (``EXPORT_RUN``: a safetensors header's field, a config.json's
    key), None where it records none or is no file peftlab reads."""
    try:
        if path.suffix == ".json":
            value = (read_json(path) or {}).get(EXPORT_RUN)
        else:
            with opened_weights(path) as name, safe_open(name, "pt") as f:
                value = (f.metadata() or {}).get(EXPORT_RUN)
    except (UserError, SafetensorError, OSError, ValueError):
        return None
    return value if isinstance(value, str) and RUN_ID.fullmatch(value) else None


def run_preprocessing(cfg, model: torch.nn.Module) -> dict:
    """How the run made its evaluation images (``peftlab.data.build.eval_preprocessing``) for ``model``."""
    spec = input_spec(model)
    return eval_preprocessing(cfg.data, spec.img_size, spec.in_chans, spec.mean, spec.std)


def load_unmerged(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The model written by ``export --merged`` for a method that does not merge (adapters, VPT):
    the backbone rebuilt from the header's config, the method applied, the file's weights loaded."""
    path = Path(path)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != "peftlab-unmerged":
        raise WeightsError(
            f"{path} is not an unmerged peftlab export (written by `peftlab export RUN_DIR --merged OUT` "
            "for a method that does not merge, such as an adapter or VPT)"
        )
    cfg = load_config(overrides=yaml.safe_load(metadata["peftlab_config"]))
    model = build_backbone(architecture_only(cfg.model), int(metadata["num_classes"]))
    tuner = apply_tuner(model, cfg.method, TunerContext.for_checks(cfg))
    result = tuner.model.load_state_dict(read_safetensors(path), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path} does not match its config's model: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return tuner.model.to(device)


def load_quantized(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The merged quantized model written by ``export_merged(..., quantized=True)``, ready to run."""
    path = Path(path)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") == "peftlab-groupwise":
        return load_groupwise(path, metadata, device)
    if metadata.get("format") != "peftlab-bitsandbytes":
        raise WeightsError(
            f"{path} is not a quantized peftlab export (written by `peftlab export RUN_DIR --quantized OUT`)"
        )
    state = read_safetensors(path)
    cfg = load_config(overrides=yaml.safe_load(metadata["peftlab_config"]))
    num_classes = int(metadata["num_classes"])
    if cfg.model.source == "timm":  # its Linears quantized one at a time: never the fp32 model whole
        model = build_for_saved_state(cfg.model, num_classes, cfg.quant)
    else:
        model = build_backbone(architecture_only(cfg.model), num_classes)
    split = sorted({m.group(1) for k in state if (m := re.match(r"(.*\.qkv)\.[qkv]\.", k))})  # split fused qkv
    replace_modules(model, split, split_qkv)
    quantize_base(model, cfg.quant, torch.device(device))
    load_pending(model)  # a placeholder quantize_base did not replace (none expected): the state must hold it
    load_quantized_state(model, state, torch.device(device))
    return model
