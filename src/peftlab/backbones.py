"""Vision transformer backbones: timm models by name, HF transformers ViT/DeiT from a directory.

Pretrained weights come from timm's Hugging Face hub weights (``pretrained: hub``: downloaded into
the hub cache, or read from it offline; ``peftlab.hub``) or from a local ``.safetensors`` file in
timm's or HF's key layout. The classifier head is always new, sized for the task's number of classes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftlab.config_sections import ModelConfig
from peftlab.data.readers import hash_file
from peftlab.errors import ConfigError, WeightsError
from peftlab.files import one_line
from peftlab.hf_config import check_hf_config
from peftlab.hub import hub_weights_file, snapshot_source
from peftlab.libraries import quiet_transformers

HEAD_PREFIXES = ("head.", "classifier.")
HF_SAFE_WEIGHTS = "model.safetensors"  # an HF model directory's weights; never its pytorch_model.bin


@dataclass(frozen=True)
class InputSpec:
    """What the data pipeline must produce for a model."""

    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def base_weights_file(cfg: ModelConfig, model: nn.Module) -> Path | None:
    """The weights file ``model`` (built by ``build_backbone`` from ``cfg``) was loaded from: the local
    file, the hub cache's file timm loaded (its ``pretrained_cfg`` names it), an HF directory's
    model.safetensors; None for a random base."""
    if cfg.source == "hf":
        path = Path(cfg.path) / HF_SAFE_WEIGHTS
        return path if path.is_file() else None
    if cfg.pretrained == "none":
        return None
    return Path(model.pretrained_cfg["file"] if cfg.pretrained == "hub" else cfg.pretrained)


def base_provenance(cfg: ModelConfig, model: nn.Module) -> dict:
    """What a result records of the base's weights: the SHA-256 of the file loaded (``base_sha256``) and,
    for a file of the hub cache, its repository and commit (``base_hub_repo``, ``base_hub_revision``)."""
    path = base_weights_file(cfg, model)
    repo, revision = (snapshot_source(path) if path else None) or (None, None)
    return {"base_sha256": hash_file(path) if path else None, "base_hub_repo": repo, "base_hub_revision": revision}


class HFLogits(nn.Module):
    """An HF image classifier whose forward returns plain logits, like a timm model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def head_prefix(model: nn.Module) -> str:
    """Name of the classifier module: ``head`` for timm, ``model.classifier`` for HF."""
    if isinstance(model, HFLogits):
        return "model.classifier"
    return model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing per block: timm's ``set_grad_checkpointing``, HF's own switch."""
    if isinstance(model, HFLogits):
        model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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
    import timm

    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('_')[0]}*")[:5]
        raise ConfigError(f"model.name={cfg.name!r} is not a timm model; similar: {', '.join(close) or 'none'}")
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
        with torch.device("meta"):
            shapes = timm.create_model(cfg.name, pretrained=False, **kwargs)
    except (TypeError, AssertionError, ValueError) as err:
        raise ConfigError(f"model.name={cfg.name!r} rejects the overrides {kwargs}: {err}") from None
    check_patch_grid(shapes, cfg)
    path = hub_weights_file(cfg.name)
    check_hub_keys(shapes, path, cfg.name)
    try:
        # num_classes 0: the checkpoint read as headless, so that timm drops its classifier and the head is
        # new, as with a local file (timm keeps the checkpoint's when the task has as many classes)
        overlay = {"file": str(path), "num_classes": 0}
        model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as err:  # noqa: BLE001 - a broken file, weights of other shapes: one line
        raise WeightsError(f"model.pretrained='hub': timm could not load {path} into {cfg.name!r} "
                           f"({one_line(err)[:200]})") from None
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
    by ``sizes`` (architecture only: the pre-flight probes a model of many patches at a small ``image_size``).
    transformers' load reports (the re-initialised head, ...) go to its logger at error level only:
    peftlab says what matters."""
    import transformers
    from transformers import AutoConfig, AutoModelForImageClassification

    quiet_transformers()
    path = Path(cfg.path)
    check_hf_config(path)  # its sizes bounded before transformers builds anything
    labels = {"num_labels": num_classes, "id2label": {i: str(i) for i in range(num_classes)},
              "label2id": {str(i): i for i in range(num_classes)}}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        if weights and not sizes:
            # safetensors only: a directory from the hub may hold a pickled pytorch_model.bin instead
            model = AutoModelForImageClassification.from_pretrained(path, ignore_mismatched_sizes=True,
                                                                    use_safetensors=True, **labels)
        else:
            model = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(path, **labels, **sizes))
    except Exception as err:  # noqa: BLE001 - a broken config.json or weights file: one line
        raise WeightsError(f"model.path={str(path)!r} is not a loadable HF model directory ({one_line(err)[:200]})") \
            from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    return HFLogits(model)


def input_spec_for(cfg: ModelConfig) -> InputSpec:
    """The input a configured model expects, without building its weights (meta device)."""
    if cfg.source == "hf":
        from transformers import AutoConfig

        quiet_transformers()
        check_hf_config(cfg.path)
        try:
            config = AutoConfig.from_pretrained(cfg.path)
        except Exception as err:  # noqa: BLE001 - missing or broken config.json: one line
            raise WeightsError(f"model.path={cfg.path!r} is not a loadable HF model directory "
                               f"({one_line(err)[:200]})") from None
        return InputSpec(config.image_size, config.num_channels, (0.5,) * 3, (0.5,) * 3)
    import timm

    if not timm.is_model(cfg.name):
        raise ConfigError(f"model.name={cfg.name!r} is not a timm model")
    with torch.device("meta"):
        model = timm.create_model(cfg.name, pretrained=False, **timm_kwargs(cfg, num_classes=2))
    check_patch_grid(model, cfg)
    return input_spec(model)


def check_patch_grid(model: nn.Module, cfg: ModelConfig) -> None:
    """The patches tile the image: timm's patch embedding would silently drop the border pixels of
    an image size that the patch size does not divide (and see nothing of a smaller image)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or getattr(embed, "dynamic_img_pad", False) or not getattr(embed, "img_size", None):
        return
    (height, width), (ph, pw) = embed.img_size, embed.patch_size
    if height % ph or width % pw:
        source = "model.img_size" if cfg.img_size else f"{cfg.name}'s default image size"
        raise ConfigError(f"model.patch_size={ph} is invalid: expected a divisor of {source} ({height}); "
                          "timm would drop the border pixels")


def input_spec(model: nn.Module) -> InputSpec:
    """Image size, channels and normalisation the model expects."""
    if isinstance(model, HFLogits):
        config = model.model.config
        return InputSpec(config.image_size, config.num_channels, (0.5,) * 3, (0.5,) * 3)
    import timm.data

    data_cfg = timm.data.resolve_data_config({}, model=model)
    in_chans, img_size, _ = data_cfg["input_size"]
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None):  # honours img_size overrides
        img_size, in_chans = patch_embed.img_size[0], patch_embed.proj.in_channels
    return InputSpec(img_size, in_chans, tuple(data_cfg["mean"]), tuple(data_cfg["std"]))


# ---------------------------------------------------------------------------------------
# Local weights


def hf_to_timm_key(key: str) -> str | None:
    """Map one HF ViT key (transformers 4.x or 5.x names) to timm's name; None if unknown.

    q/k/v projections map to ``blocks.N.attn.{q,k,v}`` and are fused by ``fuse_hf_qkv``.
    """
    key = re.sub(r"^(vit|deit)\.", "", key)
    fixed = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    if key in fixed:
        return fixed[key]
    if key.startswith("classifier."):
        return "head." + key.removeprefix("classifier.")
    match = re.match(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)$", key)
    if not match:
        return None
    block, rest = match.groups()
    parts = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.attention.query": "attn.q",
        "attention.attention.key": "attn.k",
        "attention.attention.value": "attn.v",
        "attention.q_proj": "attn.q",
        "attention.k_proj": "attn.k",
        "attention.v_proj": "attn.v",
        "attention.output.dense": "attn.proj",
        "attention.o_proj": "attn.proj",
        "intermediate.dense": "mlp.fc1",
        "mlp.fc1": "mlp.fc1",
        "output.dense": "mlp.fc2",
        "mlp.fc2": "mlp.fc2",
    }
    module, _, param = rest.rpartition(".")
    if module not in parts:
        return None
    return f"blocks.{block}.{parts[module]}.{param}"


def convert_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ViT key layout -> timm ViT key layout (q, k, v fused into ``qkv``)."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = hf_to_timm_key(key)
        if new_key is None:
            raise WeightsError(f"weights key {key!r} has no timm equivalent")
        converted[new_key] = value
    for key in [k for k in converted if re.search(r"\.attn\.q\.(weight|bias)$", k)]:
        stem, param = key.rsplit(".attn.q.", 1)
        names = [f"{stem}.attn.{name}.{param}" for name in ("q", "k", "v")]
        if missing := [n for n in names if n not in converted]:
            raise WeightsError(f"weights of {stem} have a query {param} but no {missing[0].split('.')[-2]} "
                               f"{param}: expected q, k and v together")
        parts = [converted.pop(n) for n in names]
        if len({p.shape for p in parts}) != 1 or parts[0].dim() != (1 if param == "bias" else 2):
            plural = "biases" if param == "bias" else "weights"
            raise WeightsError(f"weights of {stem}: the q, k and v {plural} have shapes "
                               f"{', '.join(str(tuple(p.shape)) for p in parts)}; expected one "
                               f"{'1-d' if param == 'bias' else '2-d'} shape for all three")
        converted[f"{stem}.attn.qkv.{param}"] = torch.cat(parts, dim=0)
    return converted


def converted_from_hf(state: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """``convert_hf_state_dict`` whose errors name the weights file."""
    try:
        return convert_hf_state_dict(state)
    except WeightsError as err:
        raise WeightsError(f"weights file {path}: {err}") from None


def is_hf_layout(keys) -> bool:
    return any(k.startswith(("vit.", "deit.", "embeddings.")) for k in keys)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a missing or unreadable file is a one-line WeightsError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local safetensors file (timm or HF layout) into a timm model, head excepted.

    Every non-head tensor of the model must be in the file with the same shape, and the file
    may hold nothing else; otherwise a WeightsError names the file and the first mismatch.
    """
    state = read_safetensors(path)
    if is_hf_layout(state):
        state = converted_from_hf(state, path)
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    state = _adapt_timm_state(state, model)
    compare_with_model(own, state, path)
    check_finite(state, path)
    model.load_state_dict(state, strict=False)


def check_finite(state: dict[str, torch.Tensor], path) -> None:
    """Base weights with NaN or inf would train into a run that ends 'diverged'; name the file instead."""
    for key, value in state.items():
        if value.is_floating_point() and value.element_size() == 1:
            value = value.float()  # torch has no isfinite for float8
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"weights file {path} holds non-finite values (NaN or inf) in {key!r}: "
                               "expected finite weights")


def check_weights_file(model: nn.Module, path: str | Path) -> None:
    """What ``load_weights`` checks, from the file's header alone (for ``peftlab validate``).

    The shapes become meta tensors, so HF layouts convert as at load time; a position embedding
    of another size is resampled at load, so its shape is not compared.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            state = {k: torch.empty(f.get_slice(k).get_shape(), dtype=header_dtype(f.get_slice(k).get_dtype()),
                                    device="meta") for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None
    if is_hf_layout(state):
        state = converted_from_hf(state, path)
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        if resampleable(state["pos_embed"].shape, model):  # otherwise compared (and refused) below
            state["pos_embed"] = own["pos_embed"]
    compare_with_model(own, state, path)
    check_finite_file(path)


def check_finite_file(path: Path) -> None:
    """``check_finite`` of a safetensors file's tensors (heads excepted: loading drops them), read one
    at a time: validate refuses the NaN or inf weights that loading refuses."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            keys = [k for k in f.keys() if not k.startswith(HEAD_PREFIXES)]
        for key in keys:  # each in its own mapping of the file: an open one keeps every page read resident
            with safe_open(str(path), "pt") as f:
                check_finite({key: f.get_tensor(key)}, path)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None


# A safetensors header's dtype names as the torch dtypes safetensors loads them as: validate
# then accepts and refuses the same files as loading does (float8 loads, complex64 is refused).
HEADER_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                 "F8_E4M3": torch.float8_e4m3fn, "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
                 "F8_E5M2": torch.float8_e5m2, "F8_E5M2FNUZ": torch.float8_e5m2fnuz, "C64": torch.complex64,
                 "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                 "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8,
                 "BOOL": torch.bool}


def header_dtype(name: str) -> torch.dtype:
    """A safetensors header's dtype name as torch's (an unknown one as int8: not floating, so refused)."""
    return HEADER_DTYPES.get(name, torch.int8)


def compare_with_model(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path) -> None:
    """Every non-head tensor of the model in the file with its shape, and nothing else; floating
    weights as floating tensors (an integer or boolean tensor would be cast silently)."""
    for key in sorted(own.keys() | state.keys()):
        if key not in state:
            raise WeightsError(f"weights file {path} does not match the model: key {key!r} is missing from the file")
        if key not in own:
            raise WeightsError(f"weights file {path} does not match the model: unexpected key {key!r}")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise WeightsError(
                f"weights file {path} does not match the model: key {key!r} has shape "
                f"{tuple(state[key].shape)} in the file, {tuple(own[key].shape)} in the model"
            )
        if own[key].is_floating_point() and not state[key].is_floating_point():
            raise WeightsError(f"weights file {path} does not match the model: key {key!r} is "
                               f"{str(state[key].dtype).removeprefix('torch.')} in the file, expected a "
                               "floating-point tensor")


def resampleable(shape, model: nn.Module) -> bool:
    """Whether timm can resample a position embedding of ``shape`` to the model's grid: it reads it
    as (1, prefix tokens + a square grid, width); anything else crashed inside timm."""
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    grid = shape[1] - prefix if len(shape) == 3 else 0
    return (len(shape) == 3 and shape[0] == 1 and shape[2] == model.pos_embed.shape[-1] and grid > 0
            and math.isqrt(grid) ** 2 == grid)


def _adapt_timm_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resample position embeddings when the image size differs (timm's own filter)."""
    if "pos_embed" not in state or not hasattr(model, "pos_embed"):
        return state
    if state["pos_embed"].shape == model.pos_embed.shape or not resampleable(state["pos_embed"].shape, model):
        return state  # an unresampleable one is refused by compare_with_model, naming its shape
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state, model)
