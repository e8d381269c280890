"""Evaluation of a split, the check that the merged model computes what the adapter does, a finished run's
classes of image files (``predict``: ``peftlab predict``), and a causal LM's greedy generations (``generations``).

Greedy generations (generations.jsonl in the run folder, a causal LM's on instruction data): the first PROMPTS
examples of the validation split (the same prompts for every configuration and seed of a study: the split depends
on the data alone) are continued greedily (the most likely token at each step, no sampling: the same weights give
the same text) for at most MAX_NEW_TOKENS tokens, or until the end-of-sequence token, or until data.max_length
tokens in all. One line a prompt: the prompt and the reference reply as the tokenizer decodes them, special tokens
left out (the turn's EOS of ``data.prompt_format: dialogue`` included), the reply generated, its token count and
why it stopped. The prompts go in one batch: 32 forward passes at most, about 0.06 CPU s on the tests' tiny
models; a tuning trial (``train.test: false``) writes none. The report shows them
(``peftlab.analysis.results.generations``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from peftlab.data.loading import BatchLoader
from peftlab.data.text.tokens import IGNORED
from peftlab.quant.bases import restore_layout, weight_only_arithmetic
from peftlab.training import metrics
from peftlab.training.run_result import CONFUSION_MAX_CLASSES, GENERATIONS, MAX_LOG_PERPLEXITY, PerClass
from peftlab.training.runtime import autocast, full_fp32, tf32_allowed
from peftlab.utils.files import write_atomic

MERGE_TOLERANCE = 1e-4  # max |logit difference| of an exact merge, relative to max |logit| (fp32 rounding)


def fetch(dataset, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch on the device: (float B x C x H x W, int64 B)."""
    return next(iter(BatchLoader(dataset, device)([indices])))


def not_evaluated(seconds: float = 0.0) -> dict:
    """``evaluate``'s record of a split it did not score: an empty one, or a tuning trial's unseen test split."""
    scores = ("loss", "top1", "top5", "f1", "matthews", "perplexity", "per_class", "predictions", "losses")
    scores += ("examples_per_second", "tokens_per_second")
    return {**dict.fromkeys(scores), "seconds": seconds}


@torch.no_grad()
def evaluate(
    model,
    dataset,
    batch_size: int,
    device: torch.device,
    precision: str,
    desc: str,
    num_workers: int | None = 0,
    progress: bool = False,
) -> dict:
    """Loss, top-1 and top-5 accuracy and examples/s (a text split's tokens/s too, padding left out) over a whole
    split (top-5 None with <= 5 classes, where it would be 100% by construction), a classifier's counts per class
    (``per_class``, a ``PerClass``) and each example's (label, predicted class) in order (``predictions``, a (2, N)
    int64 CPU tensor), a causal LM's each sequence's (summed token NLL, scored tokens) in order (``losses``: float64
    and int64 CPU tensors of N; each None for the other kind). ``dataset``: a split, or a ``BatchLoader`` of one.
    The sums stay on the device until the end. ``progress``: a bar while it runs (the run's progress setting)."""
    loader = dataset if isinstance(dataset, BatchLoader) else BatchLoader(dataset, device, num_workers)
    n = len(loader)
    if n == 0:  # no validation split (data.trainval, data.val_fraction 0): no batch at all, so no accuracy (never 0%)
        return not_evaluated()  # torch.arange(0).split(b) is one empty batch, which no model or collate takes
    was_training = model.training
    model.eval()
    sums, classes = torch.zeros(3, dtype=torch.float64, device=device), None  # loss, top-1, top-5
    counts = None  # per class: labelled, predicted, labelled and predicted (the confusion matrix's margins and
    # diagonal, all F1 and Matthews need: classes x classes counts would be 8 TB at a million classes)
    confusion = None  # the whole matrix, flattened (true class x classes + predicted), up to CONFUSION_MAX_CLASSES
    start = time.perf_counter()
    batches = torch.arange(n).split(batch_size)
    tokens = 0  # a causal LM's: the positions scored (its loss and accuracy are per token)
    pairs = []  # a classifier's (label, predicted) of each batch, kept on the device until the end
    sequences = []  # a causal LM's (summed NLL, scored tokens) of each batch's sequences, on the device too
    for images, labels in tqdm(
        loader(batches), total=len(batches), desc=desc, leave=False, disable=not progress or None
    ):
        with autocast(precision, device):
            logits = model(images).float()
        scored = None
        if logits.dim() == 3:  # a causal LM's (B, vocabulary, L - 1) against (B, L - 1) targets: per token
            scored = labels != IGNORED  # (B, L - 1)
            logits, labels = logits.transpose(1, 2)[scored], labels[scored]  # (N, vocabulary), (N,)
            tokens += len(labels)
        hits = metrics.topk_hits(logits, labels)
        sums += torch.stack([summed_loss(logits, labels, scored, sequences), hits[1].double(), hits[5].double()])
        classes = logits.shape[-1]
        if tokens:
            continue  # F1 and Matthews are a classifier's
        predicted = logits.argmax(-1)
        pairs.append(torch.stack([labels, predicted]))
        if counts is None:
            counts = torch.zeros(3, classes, dtype=torch.long, device=device)
            if classes <= CONFUSION_MAX_CLASSES:
                confusion = torch.zeros(classes * classes, dtype=torch.long, device=device)
        counts[0] += torch.bincount(labels, minlength=classes)[:classes]
        counts[1] += torch.bincount(predicted, minlength=classes)
        counts[2] += torch.bincount(labels[labels == predicted], minlength=classes)[:classes]
        if confusion is not None:  # a label beyond the head (as above: not counted) lands past the matrix
            confusion += torch.bincount(labels * classes + predicted, minlength=classes * classes)[: classes * classes]
    loss_sum, top1, top5 = sums.tolist()
    seconds = time.perf_counter() - start
    restore_layout(model)  # quant.cpu_kernel bnb repacks 4-bit weights in evaluation; training reads the standard one
    model.train(was_training)
    scores = dict.fromkeys(("f1", "matthews", "perplexity", "per_class", "predictions", "losses"))
    if tokens:  # a causal LM: the means are per token, perplexity the exponential of the loss
        scores["perplexity"] = math.exp(min(loss_sum / tokens, MAX_LOG_PERPLEXITY))
        scores["losses"] = tuple(torch.cat(parts).cpu() for parts in zip(*sequences))  # (nll, tokens) a sequence
    else:
        scores.update(metrics.class_count_scores(*counts.cpu()))
        scores["per_class"] = per_class_record(counts, confusion)
        scores["predictions"] = torch.cat(pairs, dim=1).cpu()
    count = tokens or n
    top5 = top5 / count if classes is None or classes > 5 else None
    return {
        "loss": loss_sum / count,
        "top1": top1 / count,
        "top5": top5,
        **scores,
        **throughput(loader.dataset, seconds),
        "seconds": seconds,
    }


def summed_loss(logits: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor | None, sequences: list):
    """A batch's summed cross-entropy (float64, on the device), as ``F.cross_entropy(reduction="sum")`` computes it
    (the bits every earlier record holds). A causal LM's (``scored``: which of its (B, L - 1) positions are scored)
    also appends each sequence's (summed token NLL in float64, scored tokens) to ``sequences`` (a tuning trial keeps
    them: val_losses.npy), from the same log-probabilities."""
    if scored is None:
        return F.cross_entropy(logits, labels, reduction="sum").double()
    log_probs = F.log_softmax(logits, dim=-1)  # cross_entropy is nll_loss of these: the same sum, bit for bit
    nll = torch.zeros(scored.shape, dtype=torch.float64, device=scored.device)
    nll[scored] = -log_probs.gather(1, labels[:, None]).squeeze(1).double()
    sequences.append((nll.sum(1), scored.sum(1)))
    return F.nll_loss(log_probs, labels, reduction="sum").double()


def throughput(dataset, seconds: float) -> dict:
    """A split's examples per second, and a text split's tokens per second (padding left out; None for images)."""
    lengths = getattr(dataset, "lengths", None)  # a text split's tokens per example
    return {
        "examples_per_second": len(dataset) / seconds if seconds > 0 else None,
        "tokens_per_second": int(lengths.sum()) / seconds if lengths is not None and seconds > 0 else None,
    }


def per_class_record(counts: torch.Tensor, confusion: torch.Tensor | None) -> PerClass:
    """result.json's ``per_class`` from ``evaluate``'s sums: (3, classes) counts, the flattened matrix or None."""
    labelled, predicted, correct = counts.tolist()
    classes = len(labelled)
    matrix = None if confusion is None else confusion.view(classes, classes).tolist()
    return PerClass(labelled=labelled, predicted=predicted, correct=correct, confusion=matrix)


def check_merge(
    tuner,
    dataset,
    device: torch.device,
    batch_size: int = 64,
    repeats: int = 5,
    deployable: torch.nn.Module | None = None,
) -> dict:
    """Merged and adapter outputs on one test batch: max |diff| and latency ratio (interleaved; ``repeats=0``: none).

    ``max_abs_diff`` compares the exact merge (on a quantized base: dequant(W) + ΔW in fp32)
    with the adapter computing in the arithmetic it trained with (``weight_only_arithmetic``);
    ``ok`` says it is within ``MERGE_TOLERANCE`` of the largest logit. On a quantized base the
    re-quantized merge (the deployable model) is compared with the adapter in eval mode too:
    that difference is quantization error, not a bug, and is reported, not checked. A method whose
    quantized merge is exact (QA-LoRA: the update folds into the zeros) checks it too
    (``requantized_ok``) and reports its own facts (``codes_unchanged``).

    The merges and the forwards run at full fp32 precision (``full_fp32``: TF32 off, whatever
    ``train.tf32`` says), so the check measures the merge, not TF32's rounding (about 1e-4 of a ViT's
    logits on an H100); ``tf32`` and ``matmul_precision`` record what it ran at, read inside it. ``deployable``:
    ``tuner.merged_model(quantized=tuner.quantized)`` where the caller merged it already (at full fp32: a run's merged
    test pass), checked rather than merged again.
    """
    with full_fp32():
        precision = {"tf32": tf32_allowed(), "matmul_precision": torch.get_float32_matmul_precision()}
        check = compare_merged(tuner, dataset, device, batch_size, repeats, deployable)
    return {**check, **precision}


def compare_merged(
    tuner, dataset, device: torch.device, batch_size: int, repeats: int, deployable: torch.nn.Module | None = None
) -> dict:
    """``check_merge``'s comparisons, at whatever precision the caller set."""

    def merged_model(quantized: bool) -> torch.nn.Module:
        built = deployable if deployable is not None and quantized == tuner.quantized else None
        return (built if built is not None else tuner.merged_model(quantized=quantized)).to(device).eval()

    merged = merged_model(quantized=False)
    model = tuner.model
    was_training = model.training
    model.eval()
    images, _ = fetch(dataset, torch.arange(min(batch_size, len(dataset))), device)
    with torch.no_grad():
        with weight_only_arithmetic(model):
            reference = model(images)
        diff = float((merged(images) - reference).abs().max())
        scale = float(reference.abs().max())
        check = {
            "max_abs_diff": diff,
            "tolerance": MERGE_TOLERANCE * max(scale, 1.0),
            "ok": diff <= MERGE_TOLERANCE * max(scale, 1.0),
        }
        if repeats:
            times = metrics.time_interleaved(
                {"merged": lambda: merged(images), "adapter": lambda: model(images)}, repeats, device
            )
            ratio = metrics.median(times["merged"]) / metrics.median(times["adapter"])
            check["merged_vs_adapter_latency_ratio"] = ratio
        if tuner.quantized:
            requantized = merged_model(quantized=True)
            check["requantized_max_abs_diff"] = float((requantized(images) - model(images)).abs().max())
            if tuner.exact_quantized_merge:  # QA-LoRA: the merge stays quantized and must be exact
                check["requantized_ok"] = check["requantized_max_abs_diff"] <= check["tolerance"]
                check.update(tuner.quantized_merge_facts(requantized))
    model.train(was_training)
    return check


def merge_warnings(merge: dict | None) -> list[str]:
    """A failed merge check in words, for result.json's warnings and stderr: it never passes silently."""
    if merge is None:
        return []
    found = []
    if not merge["ok"]:
        found.append(
            f"merge check failed: the merged model's logits differ from the adapter's by "
            f"{merge['max_abs_diff']:.3g} (tolerance {merge['tolerance']:.3g}); `peftlab export --merged` "
            "refuses this run unless given --force"
        )
    if merge.get("requantized_ok") is False:
        found.append(
            f"quantized merge check failed: the merged quantized model differs from the adapter by "
            f"{merge['requantized_max_abs_diff']:.3g} (tolerance {merge['tolerance']:.3g})"
        )
    return found


PREDICT_BATCH = 64  # images decoded and classified at once: memory stays bounded for a folder of any size


def predict(run_dir: str | Path, images, top_k: int = 5) -> list[dict]:
    """Each image file's ``top_k`` classes by the finished run in ``run_dir``, most probable first:
    ``[{"image": path, "top_k": [{"class": name, "index": i, "probability": p}, ...]}, ...]``, every answer of
    ``predictions`` in one list."""
    _, batches = predictions(run_dir, images, top_k)
    return [row for batch in batches for row in batch]


def predictions(run_dir: str | Path, images, top_k: int = 5, progress: bool = False) -> tuple[int, Iterator[list]]:
    """The number of image files ``images`` names and their answers by the finished run in ``run_dir``, a batch
    of ``PREDICT_BATCH`` at a time, each answer ``{"image": path, "top_k": [{"class": name, "index": i,
    "probability": p}, ...]}`` (``peftlab predict`` prints each batch as it comes: memory stays bounded for a
    folder of any size). ``images``: a path, or paths, of image files or folders (``data.readers.folders``'
    ``walk_image_files``: a folder's image files in its subfolders too, by path).

    Everything is checked before the model loads: the run (missing, unfinished or a text run), ``top_k``, and
    every file, by its type (a FIFO, a device, a link to one named as what it is) and its image header
    (``image_header``: a format PIL reads, within the pixel bound, complete), each one line (UserError,
    DataError). The images are made as the run made its test images (``peftlab.data.build.eval_images``: its
    resize, interpolation and normalisation); the names are the run's (result.json's
    ``provenance.data.class_names``; an index the data did not name is shown as its number). ``progress``: tqdm
    bars on a terminal while the files are checked and classified."""
    from peftlab.config.schema import load_config
    from peftlab.data.build import eval_images
    from peftlab.data.image_checks import image_header
    from peftlab.data.readers.folders import walk_image_files
    from peftlab.models.backbones import model_inputs
    from peftlab.training.export import class_names_of, completed_result, load_trained
    from peftlab.utils.errors import UserError

    run_dir = Path(run_dir)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise UserError(f"--top-k {top_k!r} is invalid: expected an integer >= 1")
    if not isinstance(images, str | Path | list | tuple):  # a generator: the checks' walk would spend it
        try:
            images = list(images)
        except TypeError:
            raise UserError(f"images={images!r:.80}: expected an image file or folder, or a list of them") from None
    result = completed_result(run_dir)
    cfg = load_config(run_dir / "config.yaml", base_dir=Path.cwd())
    if cfg.model.source == "hf-text":
        raise UserError(
            f"run {run_dir} is a text model (model.source: hf-text, model.task: {cfg.model.task}): predict "
            "classifies images"
        )
    count = 0  # every file checked, none held: a second walk gives them again, in the same order
    shown = None if progress else True  # tqdm: None draws on a terminal only
    for path in tqdm(walk_image_files(images), desc="checking images", unit=" images", disable=shown, leave=False):
        image_header(path)
        count += 1
    model = load_trained(run_dir).model.eval()
    spec = model_inputs(cfg.model, cfg.data.max_length)  # what the recipe gave build_splits
    names = class_names_of(result) or []

    def batches() -> Iterator[list]:
        bar = tqdm(total=count, desc="predict", unit=" images", disable=shown, leave=False)
        with bar:
            for batch in chunks(walk_image_files(images), PREDICT_BATCH):
                x = eval_images(cfg.data, [str(p) for p in batch], spec.img_size, spec.in_chans, spec.mean, spec.std)
                with torch.no_grad():
                    probabilities = torch.softmax(model(x).float(), dim=-1)  # B x num_classes
                values, indices = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
                answers = []
                for path, row_values, row_indices in zip(batch, values.tolist(), indices.tolist(), strict=True):
                    ranked = [
                        {"class": names[i] if i < len(names) else str(i), "index": i, "probability": p}
                        for p, i in zip(row_values, row_indices, strict=True)
                    ]
                    answers.append({"image": str(path), "top_k": ranked})
                bar.update(len(batch))
                yield answers

    return count, batches()


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last may be shorter), taken as they come."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


PROMPTS = 4
MAX_NEW_TOKENS = 32


def writes_generations(cfg) -> bool:
    """Whether a run of ``cfg`` writes generations.jsonl: a causal LM on instruction data, tested (not a trial)."""
    return cfg.model.task == "causal-lm" and cfg.data.name == "instructions" and cfg.train.test


@torch.no_grad()
def greedy_replies(model: torch.nn.Module, prompts: list[list[int]], eos, pad: int, limit: int, device) -> list:
    """(new token ids, why it stopped: "eos", "max_new_tokens" or "max_length") for each of ``prompts``, continued
    greedily by ``model`` (``HFCausalLM``) in one batch: the prompts right-padded and masked, one forward a step for
    those not stopped, each row's next token read at its own last position. The batch is one position wider than
    its longest row, since ``HFCausalLM``'s logits drop the last position; causal attention and the mask keep the
    padding from changing what a row reads."""
    lengths = [len(prompt) for prompt in prompts]
    width = min(limit, max(lengths) + MAX_NEW_TOKENS) + 1
    tokens = torch.full((len(prompts), 2, width), pad, dtype=torch.long)
    tokens[:, 1] = 0
    for row, prompt in enumerate(prompts):
        tokens[row, 0, : len(prompt)], tokens[row, 1, : len(prompt)] = torch.tensor(prompt), 1
    new: list[list[int]] = [[] for _ in prompts]
    stopped = ["max_length" if n >= limit else None for n in lengths]
    while None in stopped:
        live = [row for row, why in enumerate(stopped) if why is None]
        top = max(lengths[row] for row in live)
        logits = model(tokens[live, :, : top + 1].to(device))  # rows x vocabulary x top: column t predicts t + 1
        for at, row in enumerate(live):
            token = int(logits[at, :, lengths[row] - 1].argmax())  # a host sync a token: 32 steps at most
            if token == eos:
                stopped[row] = "eos"
                continue
            tokens[row, :, lengths[row]] = torch.tensor([token, 1])
            lengths[row] += 1
            new[row].append(token)
            if len(new[row]) == MAX_NEW_TOKENS or lengths[row] >= limit:
                stopped[row] = "max_new_tokens" if len(new[row]) == MAX_NEW_TOKENS else "max_length"
    return list(zip(new, stopped, strict=True))


def generations(model: torch.nn.Module, dataset, tokenizer, limit: int, device) -> list[dict]:
    """The greedy replies to the first PROMPTS prompts of ``dataset`` (a causal LM's ``TokenDataset``: the prompt is
    what comes before the first target)."""
    rows = []
    for index in range(min(PROMPTS, len(dataset))):
        tokens, targets = dataset.tokens[index], dataset.labels[index]
        start = int((targets != IGNORED).nonzero()[0]) + 1  # position t predicts t + 1
        rows.append((tokens[0, :start].tolist(), tokens[0, start : int(tokens[1].sum())].tolist()))
    if not rows:
        return []
    was_training = model.training
    model.eval()
    try:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        replies = greedy_replies(model, [prompt for prompt, _ in rows], tokenizer.eos_token_id, pad, limit, device)
    finally:
        model.train(was_training)
    return [
        {
            "index": index,
            "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
            "reference": tokenizer.decode(reference, skip_special_tokens=True),
            "reply": tokenizer.decode(new, skip_special_tokens=True),
            "new_tokens": len(new),
            "stopped": stopped,
        }
        for index, ((prompt, reference), (new, stopped)) in enumerate(zip(rows, replies, strict=True))
    ]


def write_generations(run_dir: Path, rows: list[dict]) -> None:
    """generations.jsonl, one line a row; nothing where there is no validation prompt (data.trainval)."""
    if not rows:
        return
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomic(run_dir / GENERATIONS, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
