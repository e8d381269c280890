"""A backbone's local weights file (``.safetensors``, timm's or HF's key layout): read, converted to timm's
keys (q, k and v fused), checked against the model (every non-head tensor with its shape, finite values) and
loaded; the same checks from the file's header alone for ``peftlab validate``. What peftlab writes as safetensors
(a run's adapter, every export) goes through ``write_safetensors``: the same tensors and header, the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from peftlab.data.opening import NOT_REGULAR
from peftlab.utils.errors import WeightsError
from peftlab.utils.files import reopening_name, write_atomic

HEAD_PREFIXES = ("head.", "classifier.")  # a classifier's keys, timm's and HF's: the head is always new


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
            raise WeightsError(
                f"weights of {stem} have a query {param} but no {missing[0].split('.')[-2]} "
                f"{param}: expected q, k and v together"
            )
        parts = [converted.pop(n) for n in names]
        if len({p.shape for p in parts}) != 1 or parts[0].dim() != (1 if param == "bias" else 2):
            plural = "biases" if param == "bias" else "weights"
            raise WeightsError(
                f"weights of {stem}: the q, k and v {plural} have shapes "
                f"{', '.join(str(tuple(p.shape)) for p in parts)}; expected one "
                f"{'1-d' if param == 'bias' else '2-d'} shape for all three"
            )
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


def missing_weights(path) -> WeightsError:
    """A ``model.pretrained`` file that is not there, and where a base comes from."""
    return WeightsError(
        f"weights file {path} (model.pretrained) does not exist: expected a .safetensors file (`peftlab pretrain "
        "CONFIG` writes a base, a study's pretrain: section first; `make study` writes the default one)"
    )


def check_regular_weights(path: Path) -> None:
    """``path`` (links followed) is a non-empty regular file, else one WeightsError line: a FIFO blocks the
    reader, a device never ends, a folder or a broken link holds no weights. By name: what reads the file
    opens it with ``opened_weights``, which checks the file it opened again."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise (WeightsError(f"weights file {path} is a broken link") if broken else missing_weights(path)) from None
    except (OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} cannot be read ({err})") from None
    check_weights_stat(path, st)


def check_weights_stat(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise WeightsError(f"weights file {path} is {kind}: expected a regular .safetensors file")
    if st.st_size == 0:
        raise WeightsError(f"weights file {path} is empty: expected a .safetensors file")


@contextmanager
def opened_weights(path: str | Path) -> Iterator[str]:
    """``path`` checked (``check_regular_weights``), opened once (links followed: a hub snapshot's file is a
    link into its blobs) without blocking, checked again on the descriptor, and given as a name that opens
    that same file (``reopening_name``) for safetensors, which opens names: a file swapped in at ``path``
    after the checks (a FIFO would block the reader) is never what is read."""
    path = Path(path)
    check_regular_weights(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise WeightsError(f"weights file {path} cannot be read ({err})") from None
    try:
        check_weights_stat(path, os.fstat(fd))
        yield reopening_name(fd, path)
    finally:
        os.close(fd)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a missing or unreadable file is a one-line WeightsError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with opened_weights(path) as name:
            return load_file(name)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None


def write_safetensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """``state`` with ``metadata`` written to ``path`` (atomically, ``write_atomic``), byte for byte the same for
    the same tensors and metadata: safetensors writes the header's ``__metadata__`` in the order of a Rust
    HashMap, which changes from call to call, so the header is written again with the metadata sorted by key
    (the tensors' entries safetensors already orders, by dtype then name)."""
    from safetensors.torch import save_file

    def write(tmp: str) -> None:
        save_file(state, tmp, metadata=metadata)
        if metadata:
            sort_metadata(tmp)

    write_atomic(path, write)


def sort_metadata(path: str) -> None:
    """The header of the safetensors file at ``path`` rewritten with its ``__metadata__`` sorted by key."""
    with open(path, "r+b") as file:
        size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(size))
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # json escapes no more than safetensors' serde_json: the same pairs, the same length
            raise ValueError(f"{path}: the sorted safetensors header is longer than the one written")
        file.seek(8)
        file.write(text.ljust(size))  # safetensors' own padding (spaces) keeps the body where it is


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local safetensors file (timm or HF layout) into a timm model, head excepted.

    Every non-head tensor of the model must be in the file with the same shape, and the file
    may hold nothing else; otherwise a WeightsError names the file and the first mismatch. The
    shapes are checked from the header, then each tensor is read and copied into the model in
    turn, so loading holds the model and one tensor, never a second copy of the model.
    """
    from safetensors import safe_open

    path = Path(path)
    with opened_weights(path) as name:
        check_opened_weights(model, path, name, finite=False)
        with safe_open(name, "pt") as f:
            sources = timm_sources(list(f.keys()))
        own = model.state_dict()
        for key, keys in sources.items():
            if key.startswith(HEAD_PREFIXES):
                continue
            with safe_open(name, "pt") as f:  # its own mapping: an open one keeps every page read resident
                parts = [f.get_tensor(k) for k in keys]
            value = resample_pos_embed({key: torch.cat(parts) if len(parts) > 1 else parts[0]}, model)[key]
            check_finite({key: value}, path)
            with torch.no_grad():
                own[key].copy_(value)


def timm_sources(keys: list[str]) -> dict[str, tuple[str, ...]]:
    """The file's keys behind each timm key: itself, or an HF file's q, k and v for timm's fused qkv."""
    if not is_hf_layout(keys):
        return {k: (k,) for k in keys}
    named = {hf_to_timm_key(k): k for k in keys}  # check_weights_file refused keys without a timm name
    sources = {}
    for key, file_key in named.items():
        stem, dot, rest = key.rpartition(".attn.")
        part, _, param = rest.partition(".")
        if not dot or part not in ("q", "k", "v"):
            sources[key] = (file_key,)
        elif part == "q":
            sources[f"{stem}.attn.qkv.{param}"] = tuple(named[f"{stem}.attn.{p}.{param}"] for p in "qkv")
    return sources


def check_finite(state: dict[str, torch.Tensor], path) -> None:
    """Base weights with NaN or inf would train into a run that ends 'diverged'; name the file instead."""
    for key, value in state.items():
        if value.is_floating_point() and value.element_size() == 1:
            value = value.float()  # torch has no isfinite for float8
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(
                f"weights file {path} holds non-finite values (NaN or inf) in {key!r}: expected finite weights"
            )


def check_weights_file(model: nn.Module, path: str | Path, finite: bool = True) -> None:
    """What ``load_weights`` checks, from the file's header alone (for ``peftlab validate``), and with
    ``finite`` the values too, read one tensor at a time.

    The shapes become meta tensors, so HF layouts convert as at load time; a position embedding
    of another size is resampled at load, so its shape is not compared.
    """
    path = Path(path)
    with opened_weights(path) as name:
        check_opened_weights(model, path, name, finite)


def check_opened_weights(model: nn.Module, path: Path, name: str, finite: bool) -> None:
    """``check_weights_file`` of ``path`` as ``opened_weights`` opened it (``name``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(name, "pt") as f:
            state = {
                k: torch.empty(
                    f.get_slice(k).get_shape(), dtype=header_dtype(f.get_slice(k).get_dtype()), device="meta"
                )
                for k in f.keys()
            }
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
    if finite:
        check_finite_file(path, name)


def check_finite_file(path: Path, name: str) -> None:
    """``check_finite`` of a safetensors file's tensors (heads excepted: loading drops them), read one
    at a time: validate refuses the NaN or inf weights that loading refuses. ``name`` opens it
    (``opened_weights``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(name, "pt") as f:
            keys = [k for k in f.keys() if not k.startswith(HEAD_PREFIXES)]
        for key in keys:  # each in its own mapping of the file: an open one keeps every page read resident
            with safe_open(name, "pt") as f:
                check_finite({key: f.get_tensor(key)}, path)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None


# A safetensors header's dtype names as the torch dtypes safetensors loads them as: validate
# then accepts and refuses the same files as loading does (float8 loads, complex64 is refused).
HEADER_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
    "C64": torch.complex64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


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
            raise WeightsError(
                f"weights file {path} does not match the model: key {key!r} is "
                f"{str(state[key].dtype).removeprefix('torch.')} in the file, expected a "
                "floating-point tensor"
            )


def resampleable(shape, model: nn.Module) -> bool:
    """Whether timm can resample a position embedding of ``shape`` to the model's grid: it reads it
    as (1, prefix tokens + a square grid, width); anything else crashed inside timm."""
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    grid = shape[1] - prefix if len(shape) == 3 else 0
    return (
        len(shape) == 3
        and shape[0] == 1
        and shape[2] == model.pos_embed.shape[-1]
        and grid > 0
        and math.isqrt(grid) ** 2 == grid
    )


def resample_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with its position embedding resampled to the model's grid when the image size differs
    (timm's own filter); unchanged when it fits, or cannot be resampled (compare_with_model refuses it)."""
    if "pos_embed" not in state or not hasattr(model, "pos_embed"):
        return state
    if state["pos_embed"].shape == model.pos_embed.shape or not resampleable(state["pos_embed"].shape, model):
        return state  # an unresampleable one is refused by compare_with_model, naming its shape
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state, model)


HF_SAFE_WEIGHTS = "model.safetensors"  # an HF model directory's weights; never its pytorch_model.bin


def hf_has_weights(path: Path) -> bool:
    """Whether the HF model directory ``path`` holds safetensors weights (model.safetensors, or shards and
    their index), each a non-empty regular file: a FIFO, a folder, a broken link or a link to a device
    named model.safetensors would be passed over and the model built from random weights."""
    names = [HF_SAFE_WEIGHTS, f"{HF_SAFE_WEIGHTS}.index.json"]
    try:
        names += sorted(p.name for p in path.glob("model-*.safetensors"))
    except OSError:
        pass
    found = False
    for name in names:
        if os.path.lexists(path / name):
            check_regular_weights(path / name)
            found = True
    return found


# an HF classifier's head (a distilled DeiT's two), new and sized for the task; what a checkpoint may hold
# beside the model's own tensors that a classifier does not use: another task's head, BERT's pretraining
# heads, ViT's pooler
NEW_HEADS = ("classifier", "score", "cls_classifier", "distillation_classifier")
UNUSED_HEADS = (*NEW_HEADS, "lm_head", "cls", "pooler")


def check_loading_info(info: dict, path: str | Path, new_head: bool) -> None:
    """Every tensor of the model but its new head (``new_head``) loaded from the weights, with its shape:
    transformers loads the rest and leaves a tensor missing from the file (a renamed key) random, and with
    ``ignore_mismatched_sizes`` one of another shape (a transposed one) too, saying so at warning level
    only. One WeightsError line naming a few of the keys otherwise."""

    def head(key: str, names: tuple[str, ...]) -> bool:
        return any(part in names for part in key.split(".")[:2])

    heads = NEW_HEADS if new_head else ()
    problems = {
        "missing from the file": sorted(k for k in info["missing_keys"] if not head(k, heads)),
        "in the file but not in the model": sorted(k for k in info["unexpected_keys"] if not head(k, UNUSED_HEADS)),
        "of another shape in the file": sorted(
            f"{k} {tuple(saved)} for {tuple(own)}" for k, saved, own in info["mismatched_keys"] if not head(k, heads)
        ),
    }
    said = [
        f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for what, keys in problems.items()
        if keys
    ]
    if said:
        raise WeightsError(
            f"model.path={str(path)!r}: the weights do not fit the model of its config.json: tensors "
            f"{'; '.join(said)}; expected every tensor but the classifier head"
        )
