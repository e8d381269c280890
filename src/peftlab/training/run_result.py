"""result.json: the typed record of one run (``RunResult``), its one parser and its one reader.

A completed run's record is built by ``peftlab.training.outcome.result_record``; a failure's by
``failure`` (the trainer's, the study worker's and the study runner's records). Analysis, the study
runner and ``peftlab status`` read result.json through ``read_result`` / ``parse_result``.

The record is a TypedDict, not a dataclass: which keys a result.json holds is part of its format
(a completed run has every section; a failure only the keys it reached; files of earlier versions
may lack keys or hold retired ones), and a TypedDict is written and read back as exactly the JSON
object it is, so old files read as they were written and new ones are byte for byte what they were.

The result section of docs/run-directory.md is generated from the comments on the fields below
(``python -m peftlab.training.result_reference --write docs/run-directory.md``; a test checks it is current),
so a field's comment is its documentation.
"""

import logging
import math
import socket
import types
import typing
from pathlib import Path
from typing import Literal, NotRequired, Required, TypedDict, Union

from peftlab.utils.files import read_json, write_json_atomic

RESULT_FILE = "result.json"
log = logging.getLogger(__name__)  # one "peftlab: warning:" line on stderr


class Metrics(TypedDict):
    """Accuracies and F1 are fractions in [0, 1], a Matthews correlation lies in [-1, 1], a perplexity is at least 1;
    a failed run's record has {}."""

    test_top1: float | None  # test top-1 of the adapter (unmerged); null for a tuning trial (train.test false)
    test_top5: float | None  # test top-5; null with five classes or fewer, and for a tuning trial
    val_top1: float | None  # validation top-1 of the final weights; null without a validation split (data.trainval)
    best_val_top1: float | None  # the best validation top-1 of any evaluation, the final one included
    test_loss: float | None  # mean test cross-entropy (no label smoothing); null for a tuning trial
    # test top-1 of the merged model; null where nothing merges, for a tuning trial, or an exact merge checked and not
    # tested again (train.merged_test auto)
    merged_test_top1: float | None
    test_f1: float | None  # test F1 of class 1 on a two-class task (GLUE MRPC's score); null with more classes
    test_matthews: float | None  # test Matthews correlation, multi-class form (GLUE CoLA's score); null for an LM
    test_perplexity: float | None  # a causal LM's test perplexity (exp of the mean loss per response token)
    val_f1: float | None  # validation F1 of class 1 of the final weights on a two-class task; null with more classes
    val_matthews: float | None  # validation Matthews correlation of the final weights; null for an LM
    val_perplexity: float | None  # a causal LM's validation perplexity of the final weights
    # a causal LM's base alone (its float weights, no adapter) on the same test tokens; absent for other runs
    base_test_perplexity: NotRequired[float]


# result.json records a classifier's whole confusion matrix up to this many classes (CIFAR-100's): 100 x 100 counts
# are some 115 kB of result.json as it is written, a count a line (10 classes: 2 kB); beyond it per_class holds the
# counts per class only, which grow with the classes, not their square
CONFUSION_MAX_CLASSES = 100
# a tuning trial's run keeps each validation example's label and predicted class (a classifier's), in order: a
# numpy structured array, read with allow_pickle=False (analysis.stats.choice_stability resamples them)
VAL_PREDICTIONS = "val_predictions.npy"
# a causal LM's tuning trial keeps instead each validation sequence's summed token NLL (nats) and its scored tokens, in
# order: its validation perplexity is exp(sum of nll / sum of tokens), which the resamples of sequences recompute
VAL_LOSSES = "val_losses.npy"
GENERATIONS = "generations.jsonl"  # a causal LM's greedy replies to validation prompts (training.evaluate.generations)
PREDICTION_FIELDS = [("label", "<i8"), ("predicted", "<i8")]
LOSS_FIELDS = [("nll", "<f8"), ("tokens", "<i8")]
MAX_LOG_PERPLEXITY = 700.0  # exp() of more overflows a float: a diverged LM's perplexity is reported as exp(700)


class PerClass(TypedDict):
    """The test split's counts per class, one entry per class of the head, in the order of provenance.data.class_names
    (integers; a class's test accuracy is correct / labelled)."""

    labelled: list  # the test examples of each class
    predicted: list  # the test examples the model predicted as each class (the argmax of its logits)
    correct: list  # the test examples of each class predicted as it (the confusion matrix's diagonal)
    # the confusion matrix: one row per true class, one column per predicted class, counts; null with more than
    # 100 classes (CONFUSION_MAX_CLASSES)
    confusion: list | None


class Params(TypedDict, total=False):
    """Parameter counts at the end of the run (adaptive-rank methods count the ranks they kept)."""

    total: Required[int]  # every parameter of the model; a 4-bit weight counts its out x in elements
    trainable: Required[int]  # the trainable parameters, the head's included
    trainable_ratio: float  # trainable / total
    initial: dict  # total and trainable when the method was applied, before any rank was pruned (completed runs)


class Memory(TypedDict):
    """Bytes, measured on the machine that trained the run."""

    peak_rss_bytes: int  # the process's lifetime peak resident memory
    peak_rss_above_baseline_bytes: int  # the larger of the two peaks below
    peak_rss_model_build_bytes: int  # peak above the baseline while the model was built and adapted
    peak_rss_training_bytes: int  # peak above the baseline while training, before the merged copies of testing
    rss_baseline_bytes: int  # resident memory before the model was built
    cuda_max_allocated_bytes: int | None  # torch's peak CUDA allocation; null off CUDA
    weights_bytes: int  # the tuned model's parameters and buffers, each storage once
    base_weights_bytes: int  # the frozen base weights as stored (quantized where the base is)
    base_weights_fp32_bytes: int  # the same weights in fp32
    trainable_state_bytes: int  # trainable weights, their gradients and the optimizer's state
    estimate: dict  # peftlab.training.preflight's estimate before the first step (see Memory before the first step)


class Timing(TypedDict):
    """Seconds of wall-clock time."""

    train_seconds: float  # time in training steps (validation passes apart: val_seconds)
    train_images_per_second: float | None  # training images per second of train_seconds; null for a text run
    eval_images_per_second: float | None  # test evaluation images per second; null for a tuning trial and a text run
    # a text run's training tokens per second of train_seconds, padding left out; null for an image run (and, in a
    # result.json of an earlier version, absent: its text run has train_images_per_second, in texts)
    train_tokens_per_second: NotRequired[float | None]
    # a text run's test evaluation tokens per second, padding left out; null for a tuning trial and an image run
    eval_tokens_per_second: NotRequired[float | None]
    val_seconds: float  # time in validation passes
    # time in the test passes: the test split's, where the method merges the merged model's, and a causal LM's base
    # alone (metrics.base_test_perplexity); 0 for a tuning trial, which is never tested; absent in a result.json of
    # an earlier version
    test_seconds: NotRequired[float]
    wall_seconds: float  # the whole run in this process, data loading and testing included
    # the run's processes before this one, each up to its last checkpoint (the wall_seconds of the checkpoint this one
    # resumed from): 0 for a run trained in one process; absent in a result.json of an earlier version
    earlier_wall_seconds: NotRequired[float]


class Merge(TypedDict, total=False):
    """The merged model checked against the adapter on one test batch; a method may add facts of its own."""

    max_abs_diff: Required[float]  # max |merged logits - adapter logits|
    tolerance: Required[float]  # the largest difference that passes: 1e-4 of the largest logit, at least 1e-4
    ok: Required[bool]  # max_abs_diff <= tolerance; false is a warning, and `peftlab export --merged` refuses the run
    # median forward time, merged / adapter (interleaved) of a run trained alone; absent for a study's runs, whose
    # merge is checked, not timed (runs beside it would be in the time; `peftlab bench` times it side by side, P4)
    merged_vs_adapter_latency_ratio: float
    requantized_max_abs_diff: float  # a quantized base: the re-quantized merge against the adapter (reported)
    requantized_ok: bool  # a method whose quantized merge is exact (QA-LoRA): within tolerance (checked)
    # TF32 (CUDA's cuBLAS or cuDNN flag) while the check ran, read inside it: false whatever train.tf32 says,
    # so the check measures the merge, not TF32's rounding (about 1e-4 of a ViT's logits on an H100)
    tf32: Required[bool]
    matmul_precision: Required[str]  # torch's fp32 matmul precision while the check ran: "highest" (full fp32)


class AutoBatch(TypedDict):
    """`train.auto_batch`'s halvings of the micro-batch after out-of-memory errors."""

    micro_batch: int  # the micro-batch computed at once at the end
    pieces_per_micro_batch: int  # the pieces each configured micro-batch was split into
    events: list  # one {step, micro_batch, error} per halving


class Provenance(TypedDict):
    """Where the numbers came from."""

    git_sha: str | None  # the commit peftlab ran from; null outside a git checkout
    git_dirty: bool | None  # uncommitted changes in that checkout
    versions: dict  # python and the packages that compute (torch, timm, peft, ...)
    # platform, CPU (cpu_generation: its family, model, stepping), cpu_flags, ATen's cpu_capability, device, GPU
    # (gpu_uuid), CUDA_VISIBLE_DEVICES
    hardware: dict
    # whether the CPU arithmetic was pinned (train.reproducible), bitsandbytes' 4-bit kernel, the CPU's vendor
    # and model, the branch MKL computes in (mkl_branch: COMPATIBLE,STRICT pinned) and products (a pinned run's:
    # "oneDNN AVX2, quantized bases' backward too" since 2026-11-30, "oneDNN AVX2" before; null: MKL's, as unpinned
    # runs, pinned runs before 2026-11-29 and those under PEFTLAB_PIN_PRODUCTS=mkl compute them)
    arithmetic: dict
    malloc: dict  # train.malloc as applied: mode, allocator (glibc and its version, or system), fixed mmap_threshold
    threads: int  # torch's threads (train.threads; null: OMP_NUM_THREADS, else 2 if reproducible, else physical cores)
    dtype: str  # the resolved precision: fp32, bf16 or fp16
    tf32: bool  # TF32 matmuls (CUDA only)
    fused_adamw: bool  # torch's fused AdamW kernel
    compile: dict | None  # torch.compile's record (train.compile); null when off
    world_size: int  # processes training the run (torchrun)
    seed: int  # the run's seed
    data_sha256: dict  # file name -> SHA-256 of the data files the splits were read from
    data: dict  # the splits: sizes, classes, sources, their SHA-256
    base_sha256: str | None  # SHA-256 of the base's weights file; null for a random base
    base_hub_repo: str | None  # weights from the Hugging Face hub cache: their repository
    base_hub_revision: str | None  # and their commit
    # a plugin method's distribution, version, code_sha256 (its files; in its run id), description (its config's
    # describe(): the paper's sentences on it) and bibtex (its paper's entry), or null
    plugin: dict | None


class Execution(TypedDict):
    """Which executor, job and machine trained the run: the job or task that ended it (a run resumed by a later job
    names that one; each run's job also carries the run id in its name, as Slurm's queue shows it)."""

    # "local" (a study's local worker), "submitit" (a Slurm job, or submitit's local one with --slurm-cluster
    # local) or "ray" (a Ray task); null for a run trained outside a study (`peftlab train`, the Python API)
    executor: str | None
    job_id: str | None  # submitit's job id: Slurm's `<array job>_<index>` for a job array's task; null elsewhere
    task_id: str | None  # the Ray task's id (hex, as `ray list tasks` shows it); null elsewhere
    node: str  # the host name of the machine the run trained on
    # the job's life: 1, then 2 after Slurm requeued it (preemption, time limit) or Ray ran the task again (its
    # worker died); null for the local executor and outside a study, which neither requeue nor retry
    attempt: int | None
    # the GPUs the job's scheduler gave it, as its node numbers them: Slurm's SLURM_JOB_GPUS (its gpu gres), Ray's
    # GPU ids; no key where it gave none, for the local executor (its worker's GPU: provenance.hardware's
    # cuda_visible_devices) and in a run of an earlier version. The device the run trained on: provenance.hardware's
    # device, gpu and gpu_uuid
    gpus: NotRequired[str]


def execution_here(
    executor: str | None = None,
    job_id: str | None = None,
    task_id: str | None = None,
    attempt: int | None = None,
    gpus: str | None = None,
) -> Execution:
    """The record's ``execution`` for a run that trains in this process (the node is this machine)."""
    execution = Execution(executor=executor, job_id=job_id, task_id=task_id, node=socket.gethostname(), attempt=attempt)
    if gpus:
        execution["gpus"] = gpus
    return execution


class RunResult(TypedDict, total=False):
    """One JSON object, its keys in this order. A completed run's record holds every key but the two
    failure keys; a failed or diverged run's holds status, error and config and, of the others, those
    the run reached (a crash before training: none of them). A key that a file of an earlier version
    holds and the record does not know is kept, and read by nothing."""

    # how the run ended; diverged: a non-finite loss or gradient, or non-finite weights, val/test loss or merge
    # check at the end
    status: Required[Literal["completed", "failed", "diverged"]]
    error: Required[str | None]  # why the run failed or diverged, one line; null when it completed
    step: int | None  # the last optimizer step trained
    config: Required[dict]  # the resolved config, as config.yaml holds it
    metrics: Metrics | dict  # below; {} in a failed run's record
    # below: the test split's counts per class (a run of an earlier version has no key); null for a causal LM (its
    # "classes" are its vocabulary) and for a tuning trial (train.test false: never tested)
    per_class: PerClass | None
    params: Params | None  # below; null when the run failed before its model was built
    # low-rank methods: the rank strategy, sum, budget, modules and the final rank per module (AdaLoRA: its
    # schedule in steps, and how it was fitted to a run too short for it); null for others
    ranks: dict | None
    memory: Memory  # below
    timing: Timing  # below
    # the method's own (AdaLoRA's schedule fitted to the run), a failed merge check and a slow validation, in
    # words (also printed on stderr)
    warnings: list
    auto_batch: AutoBatch | None  # below; null when the micro-batch was never halved
    merge: Merge | None  # below; null for methods whose modules do not fold into the base (adapters, prompts)
    # the method's own quantization (QA-LoRA: format, groups, error per layer); null for others
    quantization: dict | None
    # the protocol card (peftlab.config.protocol): resolution, augmentation, schedule, splits, head counted or not
    protocol: dict
    provenance: Provenance | None  # below; null when the run failed before its model was built
    # below: the executor, Slurm job or Ray task, node and attempt that trained it; a failure's record has it too
    # (a run of an earlier version has no key)
    execution: Execution
    health: dict | None  # the monitors' verdict (peftlab.training.monitors.health); a diverged run's record has it too
    monitors: dict  # the monitors' summary: log points, their cost, median gradient norms, adapter rank use
    convergence: dict  # the validation curve's summary (peftlab.training.monitors.convergence)
    frozen_base: dict  # SHA-256 of the frozen base weights at the start and the end, and whether they are equal
    traceback: str  # failed runs that crashed: the Python traceback
    checkpoint_unusable: bool  # failed runs: the checkpoint was the failure, so --retry-failed starts over


# the Metrics fields of which a smaller value is better (a loss, a perplexity); of every other, a larger one
LOWER_IS_BETTER = ("test_loss", "test_perplexity", "val_perplexity")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value is better of a Metrics field, named as result.json (``val_perplexity``) or
    a results table (``metrics.val_perplexity``) names it."""
    return metric.removeprefix("metrics.") in LOWER_IS_BETTER


def metric_range(name: str) -> tuple[float, float]:
    """The values a Metrics field can take (Metrics' docstring); (-inf, inf) for a field Metrics does not know."""
    if name not in Metrics.__annotations__:
        return -math.inf, math.inf
    if name.endswith("perplexity"):
        return 1.0, math.inf
    if name.endswith("loss"):
        return 0.0, math.inf
    return (-1.0, 1.0) if name.endswith("matthews") else (0.0, 1.0)


def metric_problem(name: str, value: object) -> str | None:
    """What is wrong with ``value`` as metric ``name`` of a result.json, in words ("metrics.test_top1 is 'abc':
    expected a finite number in [0, 1]"); None for null or a finite real number in its range. A value outside
    that (a string, a list, true, inf, 1e308 as an accuracy) is damage, never a result."""
    low, high = metric_range(name)
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None or (real and math.isfinite(value) and low <= value <= high):
        return None
    expected = "a finite number"
    if math.isfinite(high):
        expected += f" in [{low:g}, {high:g}]"
    elif math.isfinite(low):
        expected += f" of at least {low:g}"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"metrics.{name} is {shown}: expected {expected}"


FAILURE_KEYS = ("traceback", "checkpoint_unusable")  # the keys only a failure's record has
SECTIONS = {
    "metrics": Metrics,
    "per_class": PerClass,
    "params": Params,
    "memory": Memory,
    "timing": Timing,
    "merge": Merge,
    "auto_batch": AutoBatch,
    "provenance": Provenance,
    "execution": Execution,
}
OPEN_SECTIONS = ("merge",)  # keys beyond the record's: a method's own facts (QA-LoRA: codes_unchanged)


def failure(status: str, error: str, config: dict, **more) -> RunResult:
    """The record of a run that did not complete: status, error, ``step`` (when given), config, then
    what else it reached (``metrics``, ``params``, ``provenance``, ``execution``, ``health``, ``traceback``,
    ``checkpoint_unusable``) in the order given: the order of RunResult's keys."""
    step = {"step": more.pop("step")} if "step" in more else {}
    return RunResult(status=status, error=error, **step, config=config, **more)


def json_types(hint) -> tuple[type, ...]:
    """The Python types a JSON value of a field annotated ``hint`` may have."""
    origin = typing.get_origin(hint)
    if origin in (Required, NotRequired):
        return json_types(typing.get_args(hint)[0])
    if origin is Literal:
        return tuple({type(v) for v in typing.get_args(hint)})
    if origin in (Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in json_types(arg))
    if hint is type(None):
        return (type(None),)
    if hint is float:
        return (float, int)
    if isinstance(hint, type) and typing.is_typeddict(hint):
        return (dict,)
    return (origin or hint,)


TYPES = {key: json_types(hint) for key, hint in typing.get_type_hints(RunResult, include_extras=True).items()}


def parse_result(data: object) -> RunResult | None:
    """``data`` (result.json's object) as a ``RunResult``: None when it is no JSON object; a key of
    the record whose value has the wrong type reads as absent (a damaged section shows as missing);
    keys the record does not know (an older version's) are kept as they are."""
    if not isinstance(data, dict):
        return None
    return RunResult(**{k: v for k, v in data.items() if k not in TYPES or isinstance(v, TYPES[k])})


def read_result(run_dir: str | Path) -> RunResult | None:
    """The run's result.json, parsed; None when it is missing or corrupt (the run is then partial or pending)."""
    return parse_result(read_json(Path(run_dir) / RESULT_FILE))


def write_result(run_dir: str | Path, result: RunResult) -> None:
    write_json_atomic(Path(run_dir) / RESULT_FILE, result)


def metric_damage(result: RunResult) -> list[str]:
    """What makes a completed record's metrics no result: no metrics object, or a value that is no finite real
    number in its range (``metric_problem``); [] for sound metrics and for a record that did not complete. The one
    check every reader of result.json makes: a completed run with damage is ``damaged``, never done."""
    if result.get("status") != "completed":
        return []
    if "metrics" not in result:  # parse_result drops a section of the wrong JSON type
        return ["no metrics object"]
    problems = (metric_problem(name, value) for name, value in result["metrics"].items())
    return [problem for problem in problems if problem]


def status_of(result: RunResult) -> str:
    """A record's status: completed, failed or diverged as it says, or damaged for a completed record whose
    metrics are no result (``metric_damage``): a run to train again, as a pending one."""
    status = result.get("status", "failed")
    return "damaged" if status == "completed" and metric_damage(result) else status


def run_status(run_dir: str | Path) -> str:
    """completed | damaged (``status_of``) | failed | diverged | partial (a checkpoint to resume) | pending."""
    result = read_result(run_dir)
    if result is not None:
        return status_of(result)
    return "partial" if (Path(run_dir) / "checkpoint").exists() else "pending"


def set_aside_damaged_result(run_dir: str | Path) -> str | None:
    """Move a damaged result.json (``status_of``) aside to the first free ``result.json.damaged-<n>``, so that the
    run trains again (resumed from its checkpoint where it has one), and say so in one warning line; returns the
    damage in words, None (and nothing moved) for a record that is not damaged."""
    result = read_result(run_dir)
    if result is None or status_of(result) != "damaged":
        return None
    path = Path(run_dir) / RESULT_FILE
    number = 1
    while (aside := path.with_name(f"{RESULT_FILE}.damaged-{number}")).exists() or aside.is_symlink():
        number += 1
    path.rename(aside)
    why = metric_damage(result)[0]
    log.warning(f"{path} is damaged ({why}): moved to {aside.name}; the run trains again")
    return why


def key_problems(result: dict) -> list[str]:
    """The keys of a completed run's record that the record lacks or does not know ("missing
    timing.val_seconds", "unknown metrics.x"); [] for a record that matches it exactly."""
    expected = [k for k in RunResult.__annotations__ if k not in FAILURE_KEYS]
    problems = [f"missing {k}" for k in expected if k not in result]
    problems += [f"unknown {k}" for k in result if k not in RunResult.__annotations__]
    for name, section in SECTIONS.items():
        value = result.get(name)
        if not isinstance(value, dict):
            continue
        problems += [f"missing {name}.{k}" for k in section.__required_keys__ if k not in value]
        if name not in OPEN_SECTIONS:
            problems += [f"unknown {name}.{k}" for k in value if k not in section.__annotations__]
    return problems
