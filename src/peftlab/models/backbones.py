"""Transformer backbones: timm models by name, HF transformers ViT/DeiT (``source: hf``) and text
classifiers (``source: hf-text``: Llama, GPT-2, BERT, RoBERTa) from a directory (``model.path``, or the
hub snapshot of ``model.name`` with ``pretrained: hub``: ``peftlab.models.hub.hf_model_dir``).

Pretrained weights come from the Hugging Face hub (``pretrained: hub``: downloaded into the hub cache,
or read from it offline; ``peftlab.models.hub``), from a local ``.safetensors`` file in timm's or HF's key layout
(``peftlab.models.weights``), or from an HF model directory's model.safetensors. The classifier head is always
new, sized for the task's number of classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from peftlab.config.checks import closest
from peftlab.config.sections import ModelConfig
from peftlab.data.inputs import InputSpec, TextSpec
from peftlab.data.readers.records import hash_file
from peftlab.models.hf_config import check_hf_config, is_decoder, load_tokenizer, pad_token
from peftlab.models.hub import hf_model_dir, hub_weights_file, snapshot_source
from peftlab.models.meta import shapes_only
from peftlab.models.weights import (
    HEAD_PREFIXES,
    HF_SAFE_WEIGHTS,
    check_finite,
    check_loading_info,
    hf_has_weights,
    load_weights,
)
from peftlab.utils.errors import ConfigError, WeightsError
from peftlab.utils.files import one_line
from peftlab.utils.libraries import quiet_transformers

HF_SOURCES = ("hf", "hf-text")  # model.source values read from an HF model directory (hf_model_dir)


def base_weights_file(cfg: ModelConfig, model: nn.Module) -> Path | None:
    """The weights file ``model`` (built by ``build_backbone`` from ``cfg``) was loaded from: the local
    file, the hub cache's file timm loaded (its ``pretrained_cfg`` names it), an HF directory's
    model.safetensors; None for a random base (or a sharded HF one)."""
    if cfg.source in HF_SOURCES:
        path = hf_model_dir(cfg) / HF_SAFE_WEIGHTS
        return path if path.is_file() else None
    if cfg.pretrained == "none":
        return None
    return Path(model.pretrained_cfg["file"] if cfg.pretrained == "hub" else cfg.pretrained)


def base_provenance(cfg: ModelConfig, model: nn.Module) -> dict:
    """What a result records of the base's weights: the SHA-256 of the file loaded (``base_sha256``) and,
    for a file or an HF model directory of the hub cache, its repository and commit (``base_hub_repo``,
    ``base_hub_revision``)."""
    path = base_weights_file(cfg, model)
    where = hf_model_dir(cfg) if cfg.source in HF_SOURCES else path
    repo, revision = (snapshot_source(where) if where else None) or (None, None)
    return {"base_sha256": hash_file(path) if path else None, "base_hub_repo": repo, "base_hub_revision": revision}


class HFLogits(nn.Module):
    """An HF image classifier whose forward returns plain logits, like a timm model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class HFTextLogits(HFLogits):
    """An HF sequence classifier whose forward takes token ids and returns plain logits."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # input_ids: (batch, tokens), or (batch, 2, tokens) with the mask stacked (peftlab.data.text.tokens)
        # -> (batch, classes)
        if input_ids.dim() == 3:
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class HFCausalLM(HFLogits):
    """An HF causal LM whose forward takes stacked token ids and mask (``peftlab.data.text.tokens``) and
    returns the next-token logits laid out as ``F.cross_entropy`` reads them: (batch, vocabulary,
    tokens - 1), position t predicting token t + 1; the targets come shifted alike, padding and prompt
    tokens -100. Its head is the LM head, which does not train under a PEFT method (GPT-2 ties it to
    the token embeddings): ``trains_head`` False."""

    trains_head = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() == 3:
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, :-1].transpose(1, 2)


def trains_head(model: nn.Module) -> bool:
    """Whether a method trains the model's head beside its own parameters: a classifier's, yes; a causal
    LM's vocabulary projection, no (``HFCausalLM``)."""
    return getattr(model, "trains_head", True)


def head_prefix(model: nn.Module) -> str:
    """Name of the classifier module: ``head`` for timm, ``model.classifier`` for HF (``model.score``
    for the decoders, Llama's and GPT-2's sequence classifiers; ``model.lm_head`` for a causal LM)."""
    if isinstance(model, HFCausalLM):
        return "model.lm_head"
    if isinstance(model, HFLogits):
        return "model.score" if hasattr(model.model, "score") else "model.classifier"
    return model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing per block: timm's ``set_grad_checkpointing``, HF's own switch (non-reentrant:
    the frozen embeddings of a PEFT run need no input that requires grad). An HF model whose class cannot
    recompute its blocks is one ConfigError line, not a run trained without what the config says."""
    if isinstance(model, HFLogits):
        hf = model.model
        if not getattr(hf, "supports_gradient_checkpointing", False):
            raise ConfigError(
                f"train.grad_checkpointing=true: transformers' {type(hf).__name__} cannot recompute its blocks' "
                "activations (supports_gradient_checkpointing is false): expected false for this model"
            )
        if hasattr(hf, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns, then goes in v6
            hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.set_grad_checkpointing(True)


def timm_kwargs(cfg: ModelConfig, num_classes: int) -> dict:
    """The keyword arguments given to ``timm.create_model`` (architecture overrides only when set)."""
    kwargs = {"num_classes": num_classes, "in_chans": cfg.in_chans, "drop_path_rate": cfg.drop_path_rate}
    for name in ("img_size", "patch_size", "depth", "embed_dim", "num_heads"):
        value = getattr(cfg, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def build_backbone(cfg: ModelConfig, num_classes: int, weights: bool = True) -> nn.Module:
    """A model with a fresh ``num_classes`` head and the configured pretrained weights (``weights``
    False: the architecture only, as for counting on the meta device)."""
    if cfg.source == "hf":
        return build_hf(cfg, num_classes, weights)
    if cfg.source == "hf-text":
        return build_hf_text(cfg, num_classes, weights)
    import timm

    if not timm.is_model(cfg.name):
        close = closest(cfg.name, timm.list_models())  # the whole name: vit_smal_patch16_224 is vit_small_...
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"model.name={cfg.name!r} is not a timm model{hint}; timm.list_models() lists them")
    kwargs = timm_kwargs(cfg, num_classes)
    if cfg.pretrained == "hub" and weights:
        return build_from_hub(cfg, kwargs)
    try:
        model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    except (TypeError, AssertionError, ValueError) as err:
        raise ConfigError(f"model.name={cfg.name!r} rejects the overrides {kwargs}: {err}") from None
    check_patch_grid(model, cfg)
    if cfg.pretrained != "none" and weights:
        load_weights(model, cfg.pretrained)
    return model


def build_from_hub(cfg: ModelConfig, kwargs: dict) -> nn.Module:
    """timm's model with its hub weights: the safetensors file in the hub cache (fetched first with
    network), loaded by timm's own loader (its checkpoint filter, the new head for num_classes)."""
    import timm

    try:  # the overrides first, on the meta device, before any download: a load error below is the weights' own
        with shapes_only():
            shapes = timm.create_model(cfg.name, pretrained=False, **kwargs)
    except (TypeError, AssertionError, ValueError) as err:
        raise ConfigError(f"model.name={cfg.name!r} rejects the overrides {kwargs}: {err}") from None
    check_patch_grid(shapes, cfg)
    path = hub_weights_file(cfg.name)
    check_hub_keys(shapes, path, cfg.name)
    try:
        # num_classes 0: the checkpoint read as headless, so that timm drops its classifier and the head is
        # new, as with a local file (timm keeps the checkpoint's when the task has as many classes); custom_load
        # False: the file is a state dict, not the original .npz (timm >= 1.0.31 resets it for a file itself)
        overlay = {"file": str(path), "custom_load": False, "num_classes": 0}
        model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as err:
        raise WeightsError(
            f"model.pretrained='hub': timm could not load {path} into {cfg.name!r} ({one_line(err)[:200]})"
        ) from None
    check_finite({k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}, path)
    return model


def check_hub_keys(model: nn.Module, path: Path, name: str) -> None:
    """Every tensor of ``model`` but its classifier in the hub file, and nothing else, from the file's
    header. timm loads pretrained weights non-strictly when it replaces the classifier: a tensor missing
    from the file would be logged at info level and its layer left random. Shapes are timm's to check:
    it resamples the position embedding and adapts the patch embedding to ``in_chans`` first."""
    from safetensors import SafetensorError, safe_open

    classifier = model.pretrained_cfg.get("classifier") or "head"
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    try:
        with safe_open(str(path), "pt") as f:
            found = {k for k in f.keys() if not k.startswith(heads)}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None
    own = {k for k in model.state_dict() if not k.startswith(heads)}
    if own != found:
        key = min(own ^ found)
        what = "is missing from the file" if key in own else "is in the file but not in the model"
        raise WeightsError(f"weights file {path} does not match model.name={name!r} as configured: key {key!r} {what}")


def build_hf(cfg: ModelConfig, num_classes: int, weights: bool = True, **sizes: int) -> nn.Module:
    """An HF image classifier with a fresh head: ``from_pretrained``, or ``from_config`` for the
    architecture alone (``from_pretrained`` refuses the meta device), its config's values replaced
    by ``sizes`` (architecture only: the pre-flight probes a model of many patches at a small ``image_size``)."""
    from transformers import AutoModelForImageClassification

    path = hf_model_dir(cfg, weights and not sizes)
    check_hf_config(path)  # its sizes bounded before transformers builds anything
    if weights and not sizes:
        hf_has_weights(path)
    return HFLogits(load_hf(AutoModelForImageClassification, path, num_classes, weights and not sizes, **sizes))


def build_hf_text(cfg: ModelConfig, num_classes: int, weights: bool = True) -> nn.Module:
    """An HF sequence classifier with a fresh head, from the directory's model.safetensors, or from its
    config.json alone (random init) when it holds no weights: a saved config is a model to count and test.

    The decoders (Llama, GPT-2) classify at the last token that is not padding, so a config without a
    ``pad_token_id`` gets its ``eos_token_id`` (0 without one). GPT-2's Conv1D layers become nn.Linear
    (``linear_from_conv1d``): the same product, so that its fused ``c_attn`` splits into q, k and v as
    timm's ``qkv`` does and every method sees the Linears it knows."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    path = hf_model_dir(cfg, weights)
    config = check_hf_config(path)
    causal = cfg.task == "causal-lm"
    has_weights = hf_has_weights(path)
    if weights and not has_weights and any(path.glob("pytorch_model*.bin")):
        raise WeightsError(
            f"model.path={str(path)!r} holds only pickled weights (pytorch_model.bin): expected {HF_SAFE_WEIGHTS}"
        )
    model = load_hf(
        AutoModelForCausalLM if causal else AutoModelForSequenceClassification,
        path,
        None if causal else num_classes,
        weights and has_weights,
        pad_token_id=pad_token(config),
    )
    conv1d = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    for name in conv1d:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, linear_from_conv1d(getattr(owner, child)))
    wrapped = HFCausalLM(model) if causal else HFTextLogits(model)
    wrapped.conv1d_names = conv1d  # written back as Conv1D by save_hf_model
    return wrapped


def hf_source_of(path: str | Path) -> tuple[str, int]:
    """(``hf`` or ``hf-text``, its number of labels) of an HF model directory: an image classifier's
    ``model_type`` is one transformers' image classifiers know; every other is read as text."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    config = check_hf_config(path)
    labels = config.get("id2label")
    count = len(labels) if isinstance(labels, dict) and len(labels) >= 2 else 2
    return ("hf" if config.get("model_type") in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES else "hf-text"), count


def linear_from_conv1d(conv: nn.Module) -> nn.Linear:
    """An nn.Linear computing what transformers' ``Conv1D`` (GPT-2) computes: ``x @ W + b`` with W stored
    (in, out), so the Linear's (out, in) weight is its transpose."""
    in_features, out_features = conv.weight.shape
    weight = conv.weight
    linear = nn.Linear(in_features, out_features, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        if weight.device.type != "meta":
            linear.weight.copy_(weight.t())
            linear.bias.copy_(conv.bias)
    linear.requires_grad_(weight.requires_grad)
    return linear


def load_hf(auto_cls, path: str | Path, num_classes: int | None, weights: bool, **overrides) -> nn.Module:
    """``auto_cls`` (an ``AutoModelFor...`` class) with a fresh ``num_classes`` head (None: its own head, a
    causal LM's): ``from_pretrained``
    (safetensors only: a directory from the hub may hold a pickled pytorch_model.bin instead), or
    ``from_config`` without ``weights``; ``overrides`` replace values of its config.
    transformers' load reports (the re-initialised head, ...) go to its logger at error level only:
    peftlab says what matters."""
    import transformers
    from transformers import AutoConfig

    quiet_transformers()
    labels = {}
    if num_classes is not None:
        labels = {
            "num_labels": num_classes,
            "id2label": {i: str(i) for i in range(num_classes)},
            "label2id": {str(i): i for i in range(num_classes)},
        }
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # its "Loading weights" bar: one local file, a blink
    try:
        if weights:
            model, info = auto_cls.from_pretrained(
                path,
                ignore_mismatched_sizes=num_classes is not None,  # the head's, checked below to be the head's only
                use_safetensors=True,
                trust_remote_code=False,
                output_loading_info=True,
                **labels,
                **overrides,
            )
            check_loading_info(info, path, new_head=num_classes is not None)
            return model
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, **labels, **overrides)
        return auto_cls.from_config(config, trust_remote_code=False)
    except Exception as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(
            f"model.path={str(path)!r} is not a loadable HF model directory ({one_line(err)[:200]})"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def model_inputs(cfg: ModelConfig, max_length: int = 128) -> InputSpec | TextSpec:
    """What the data path needs of the model (``peftlab.data.inputs.build_splits``): ``input_spec_for``'s,
    with a text model's own tokenizer (padding as the model pads) and whether it is a causal LM."""
    spec = input_spec_for(cfg, max_length)
    if not isinstance(spec, TextSpec):
        return spec
    tokenizer = load_tokenizer(hf_model_dir(cfg, weights=False), pad_token(spec.config))
    causal = cfg.task == "causal-lm"
    return dataclasses.replace(spec, tokenizer=tokenizer, language_model=causal, decoder=is_decoder(spec.config))


def input_spec_for(cfg: ModelConfig, max_length: int = 128) -> InputSpec | TextSpec:
    """The input a configured model expects, without building its weights (meta device)."""
    if cfg.source == "hf-text":
        return TextSpec(check_hf_config(hf_model_dir(cfg, weights=False)), max_length)  # data.max_length
    if cfg.source == "hf":
        from transformers import AutoConfig

        quiet_transformers()
        path = str(hf_model_dir(cfg, weights=False))
        check_hf_config(path)
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        except Exception as err:
            raise WeightsError(
                f"model.path={path!r} is not a loadable HF model directory ({one_line(err)[:200]})"
            ) from None
        return hf_input_spec(config, path)
    import timm

    if not timm.is_model(cfg.name):
        close = closest(cfg.name, timm.list_models())
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"model.name={cfg.name!r} is not a timm model{hint}; timm.list_models() lists them")
    with shapes_only():
        model = timm.create_model(cfg.name, pretrained=False, **timm_kwargs(cfg, num_classes=2))
    check_patch_grid(model, cfg)
    return input_spec(model)


def hf_input_spec(config, path: str | None = None) -> InputSpec:
    """An HF config's input (a CLIP config's is its vision tower's), normalised as the directory's
    preprocessor_config.json says (CLIP's and DINOv2's means are not ViT's 0.5), else to [-1, 1]."""
    vision = getattr(config, "vision_config", None) or config
    channels = getattr(vision, "num_channels", 3)
    mean, std = hf_normalisation(Path(path) / "preprocessor_config.json", channels) if path else (None, None)
    return InputSpec(vision.image_size, channels, mean or (0.5,) * channels, std or (0.5,) * channels)


def hf_normalisation(path: Path, channels: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The image processor's ``image_mean`` and ``image_std`` (None without the file); a malformed
    value is one line naming the file and the key."""
    import json

    from peftlab.config.reading import MissingFile, read_text_file

    try:  # opened once, not asked first
        processor = json.loads(read_text_file(path, "HF image processor config", "a JSON file"))
    except MissingFile:
        return None, None
    except ValueError as err:
        raise WeightsError(f"{path} is not valid JSON ({str(err)[:200]})") from None
    values = []
    for key in ("image_mean", "image_std"):
        value = processor.get(key) if isinstance(processor, dict) else None
        good = isinstance(value, list) and len(value) == channels
        good = good and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 10 for v in value)
        if value is not None and not good:
            raise WeightsError(f"{path}: {key}={value!r} is invalid: expected {channels} numbers in (0, 10)")
        values.append(tuple(float(v) for v in value) if value is not None else None)
    return values[0], values[1]


def check_patch_grid(model: nn.Module, cfg: ModelConfig) -> None:
    """The patches tile the image: timm's patch embedding would silently drop the border pixels of
    an image size that the patch size does not divide (and see nothing of a smaller image)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or getattr(embed, "dynamic_img_pad", False) or not getattr(embed, "img_size", None):
        return
    (height, width), (ph, pw) = embed.img_size, embed.patch_size
    if height % ph or width % pw:
        source = "model.img_size" if cfg.img_size else f"{cfg.name}'s default image size"
        raise ConfigError(
            f"model.patch_size={ph} is invalid: expected a divisor of {source} ({height}); "
            "timm would drop the border pixels"
        )


def input_spec(model: nn.Module) -> InputSpec:
    """Image size, channels and normalisation the model expects."""
    if isinstance(model, HFLogits):
        return hf_input_spec(model.model.config)
    import timm.data

    data_cfg = timm.data.resolve_data_config({}, model=model)
    in_chans, img_size, _ = data_cfg["input_size"]
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None):  # honours img_size overrides
        img_size, in_chans = patch_embed.img_size[0], patch_embed.proj.in_channels
    return InputSpec(img_size, in_chans, tuple(data_cfg["mean"]), tuple(data_cfg["std"]))
