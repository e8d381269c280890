"""Training one run in its directory: ``train(cfg, run_dir)``.

The directory is locked while it trains and holds one config; a finished run returns its
result, an unfinished one resumes from ``checkpoint/``. ``train`` calls the recipe
(``peftlab.training.recipe.run``) and records what it ends in: a completed run, a diverged one,
a failure (result.json says which). With ``train.auto_batch`` an out-of-memory error halves the
micro-batch and the recipe goes on from the last checkpoint. Under torchrun every rank trains;
only rank 0 writes in the run directory.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from peftlab.config.schema import RunConfig, config_hash, dump_config, load_config, to_dict
from peftlab.training import distributed, recipe, tracking
from peftlab.training.monitors.health import health
from peftlab.training.recipe_state import RunState
from peftlab.training.run_result import (
    Execution,
    RunResult,
    execution_here,
    failure,
    read_result,
    set_aside_damaged_result,
    status_of,
    write_result,
)
from peftlab.training.runtime import out_of_memory
from peftlab.training.step import Diverged
from peftlab.utils import locks
from peftlab.utils.cpu import child_environment, pin_arithmetic
from peftlab.utils.errors import CheckpointError, ConfigError, UserError, stops_unwrapped
from peftlab.utils.files import check_run_dir, one_line, remove_temporaries, write_atomic
from peftlab.utils.libraries import LIBRARY_LOG, logged_to
from peftlab.utils.progress import RELAY_ENV, RELAY_PREFIX, RelayedBar


def train(
    cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, position: int = 0, execution: Execution | None = None
) -> RunResult:
    """Train one run in ``run_dir``; returns its record (also written to result.json). ``execution``: the study
    executor's job that trains it (its record's ``execution``; by default none, this machine).

    The run directory is locked while it trains: a second trainer of the same directory gets a
    one-line error naming the first (``locks.DirectoryInUse``) and writes nothing.
    """
    run_dir = Path(run_dir)
    if cfg.train.reproducible:
        pin_arithmetic()  # refuses (one line) when torch already runs with the CPU's own arithmetic
    check_run_dir(run_dir)  # a file, a device, or entries of the wrong kind (a FIFO, a directory): one line
    tracking.check_trackers(cfg.track)  # a tracker's missing package: one line, before the run folder exists
    ranks = distributed.from_environment()  # torchrun: one of several processes training this run
    try:
        if not ranks.main:  # only rank 0 writes in the run directory; the others write in a scratch one
            return train_replica(cfg, run_dir, ranks)
        with locks.hold(run_dir, "run directory", "peftlab train"), logged_to(run_dir / LIBRARY_LOG):
            return train_in(cfg, run_dir, progress, position, ranks, execution or execution_here())
    finally:
        distributed.stop(ranks)


def train_replica(cfg: RunConfig, run_dir: Path, ranks: distributed.Group) -> RunResult:
    """A rank other than 0: the same training on its shard of every batch, resumed from rank 0's
    checkpoint, its own logs and checkpoints thrown away."""
    done = read_result(run_dir)
    if done is not None and status_of(done) == "completed":
        return done
    with tempfile.TemporaryDirectory(prefix=f"peftlab-rank{ranks.rank}-") as scratch:
        state = RunState(resume_dir=run_dir / "checkpoint")
        try:
            return recipe.run(cfg, Path(scratch), state, progress=False, row=0, ranks=ranks)
        finally:
            tracking.finish_log(state.log, None)


def train_in(
    cfg: RunConfig,
    run_dir: Path,
    progress: bool,
    position: int,
    ranks: distributed.Group = distributed.SINGLE,
    execution: Execution | None = None,
) -> RunResult:
    """The run in its (locked) directory: its result, recorded whatever the recipe ends in."""
    prepare_run_dir(cfg, run_dir)
    for directory in (run_dir, run_dir / "checkpoint"):  # what a killed atomic write left behind
        remove_temporaries(directory)
    set_aside_damaged_result(run_dir)  # a completed record whose metrics are no result: the run trains again
    done = read_result(run_dir)
    if done is not None and done.get("status") == "completed":
        return done
    state = RunState(execution=execution or execution_here())
    try:
        with stops_unwrapped():  # a Ctrl-C or requeue exit that a library turned into its own error stays a stop
            result = run_halving(cfg, run_dir, state, progress, position, ranks)
    except Diverged as err:
        if err.step is not None:  # found at a later check point: the step it happened at
            state.step = err.step
        result = failed_result(cfg, "diverged", str(err), state)
        result["health"] = health(state.log.records(), diverged=True) if state.log else None
    except UserError as err:
        result = failed_result(cfg, "failed", str(err), state)
        result["checkpoint_unusable"] = isinstance(err, CheckpointError)  # --retry-failed then starts over
        write_result(run_dir, result)
        tracking.finish_log(state.log, result)
        raise
    except Exception as err:  # record any crash, then let it propagate
        result = failed_result(cfg, "failed", f"{type(err).__name__}: {err}", state)
        result["traceback"] = traceback.format_exc()
        write_result(run_dir, result)
        tracking.finish_log(state.log, result)
        raise
    except BaseException:  # killed or interrupted: the sinks keep what they hold; the next call resumes
        tracking.finish_log(state.log, None)
        raise
    write_result(run_dir, result)
    tracking.finish_log(state.log, result)
    return result


def run_halving(
    cfg: RunConfig, run_dir: Path, state: RunState, progress: bool, position: int, ranks: distributed.Group
) -> RunResult:
    """The recipe; with ``train.auto_batch``, an out-of-memory error halves the micro-batch that is
    computed at once (each configured micro-batch is split in 2, 4, ... pieces whose gradients
    accumulate: the same effective batch and the same steps) and the run goes on from its last
    checkpoint. Each halving is recorded (result.json ``auto_batch``)."""
    while True:
        try:
            return recipe.run(cfg, run_dir, state, progress=progress, row=position, ranks=ranks)
        except Exception as err:
            micro = math.ceil(cfg.train.batch_size / state.split)
            if not (cfg.train.auto_batch and out_of_memory(err) and micro > 1 and not ranks.active):
                if out_of_memory(err) and not cfg.train.auto_batch:
                    raise type(err)(
                        f"{one_line(err)[:200]} (train.auto_batch=true halves the micro-batch "
                        "and goes on from the last checkpoint)"
                    ) from err
                raise
            error = one_line(err)[:200]
        tracking.finish_log(state.log, None)  # reopened, and cut back to the checkpoint
        state.log = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        state.split *= 2
        events = (state.auto_batch or {}).get("events", [])
        state.auto_batch = {
            "micro_batch": math.ceil(cfg.train.batch_size / state.split),
            "pieces_per_micro_batch": state.split,
            "events": events + [{"step": state.step, "micro_batch": micro, "error": error}],
        }
        print(
            f"peftlab: out of memory at micro-batch {micro}; train.auto_batch goes on from the last checkpoint "
            f"at micro-batch {state.auto_batch['micro_batch']}",
            file=sys.stderr,
            flush=True,
        )


def failed_result(cfg: RunConfig, status: str, error: str, state: RunState) -> RunResult:
    return failure(
        status,
        error,
        to_dict(cfg),
        step=state.step,
        metrics={},
        params=state.params,
        provenance=state.provenance,
        execution=state.execution,
    )


# what one attempt of a run writes in its directory (a failed attempt's move aside together)
ATTEMPT_FILES = (
    "config.yaml",
    "result.json",
    "metrics.jsonl",
    "monitors.jsonl",
    "importance.jsonl",
    "val_predictions.npy",
    "val_losses.npy",
    "checkpoint",
    "adapter.safetensors",
    "adapter_config.json",
    "adapter_model.safetensors",
    "tensorboard",
    "wandb",
)


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Write config.yaml. A directory that holds another config is refused, not overwritten, unless
    its run failed or diverged: then that attempt's files move aside into ``failed-<time>/``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if path.exists():
        # paths are absolute in config.yaml; those of earlier versions were relative to the current directory
        existing = load_config(path, base_dir=Path.cwd())
        if config_hash(existing, 64) != config_hash(cfg, 64):  # the sinks (track) may change between calls
            if (read_result(run_dir) or {}).get("status") not in ("failed", "diverged"):
                raise ConfigError(
                    f"run directory {run_dir} holds a different config.yaml (of a run that completed "
                    "or can resume); use another --run-dir"
                )
            stamp = time.strftime("failed-%Y%m%d-%H%M%S")
            aside, n = run_dir / stamp, 1
            while aside.exists():
                aside, n = run_dir / f"{stamp}-{n}", n + 1
            aside.mkdir()
            for name in ATTEMPT_FILES:
                if (run_dir / name).exists():
                    (run_dir / name).rename(aside / name)
            existing = None
    if not path.exists() or existing is None or existing != cfg:  # the sinks or train.reproducible changed
        write_atomic(path, lambda tmp: Path(tmp).write_text(dump_config(cfg)))


# A reproducible run trained by ``peftlab train`` in a child process started with the CPU arithmetic pinned
# (``peftlab.train`` where torch already runs unpinned). MKL reads MKL_CBWR at its first call and ATen its capability
# when torch is imported, so a process whose torch already runs (a kernel whose first cell imported torch or timm)
# cannot pin itself: switches set then are in its environment and not in its arithmetic (``utils.cpu.pin_took``).
# The run is trained by the command, in a process started with the switches, and its record read back from
# result.json: the same record and weights ``peftlab train`` gives. Its output (progress bars, warnings) is passed
# on to this process's stderr; its one-line error is raised here as the UserError it was; a Ctrl-C here stops it
# cleanly (the run stays resumable).

ERROR_PREFIX = "peftlab: error: "
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding peftlab: the child imports this peftlab
STOP_GRACE_SECONDS = 120  # a stopped run writes its checkpoint before it ends


def parent_death_signal():
    """A function for the child to call before it runs (``preexec_fn``): SIGKILL it when this process ends (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing). libc is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def train_in_pinned_process(cfg: RunConfig, run_dir: Path, *, progress: bool = False) -> RunResult:
    """``peftlab train`` of ``cfg`` (its resolved config, written to a temporary file) into ``run_dir``, in a
    process started with the pin; its record, as result.json holds it."""
    run_dir = Path(os.path.abspath(run_dir))
    env = child_environment()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    if progress:  # its steps drawn here as one bar (relay), not as its lines
        env[RELAY_ENV] = "1"
    with tempfile.TemporaryDirectory(prefix="peftlab-pinned-") as scratch:
        config = Path(scratch) / "config.yaml"
        config.write_text(dump_config(cfg))
        command = [sys.executable, "-m", "peftlab.cli", "train", str(config), "--run-dir", str(run_dir)]
        proc = subprocess.Popen(
            [*command, *([] if progress else ["--quiet"])],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its summary line: the record is returned
            stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C reaches this process, which stops the child once
            preexec_fn=parent_death_signal(),
        )
        last = relay(proc)
    if proc.returncode == 2 and last.startswith(ERROR_PREFIX):
        raise UserError(last[len(ERROR_PREFIX) :])
    result = read_result(run_dir)
    if proc.returncode in (0, 1) and result is not None:
        if last.startswith(ERROR_PREFIX):  # held back for a raise that does not come: shown after all
            print(last, file=sys.stderr)
        return result
    raise UserError(f"the pinned training process of {run_dir} ended with status {proc.returncode}: {last}")


def relay(proc: subprocess.Popen) -> str:
    """Pass the child's stderr on to this process's as it comes, but for its error lines (``ERROR_PREFIX``), which
    the caller raises (one line, once), and its progress (``utils.progress.RELAY_PREFIX`` lines), drawn as one bar
    here (``RelayedBar``); its last error line, else its last line. A KeyboardInterrupt here stops the
    child with SIGINT (the command's clean stop), waits for it, and is raised again."""
    last, held, bar = b"", b"", RelayedBar()
    try:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            shown, held, progress = split_output(held + chunk)
            for line in progress:
                bar.take(line.decode(errors="replace"))
            sys.stderr.write(shown.decode(errors="replace"))
            sys.stderr.flush()
            last = (last + chunk)[-4096:]
        proc.wait()
        if not held.startswith((ERROR_PREFIX.encode(), RELAY_PREFIX.encode())):  # no error nor progress line
            sys.stderr.write(held.decode(errors="replace"))
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        bar.close()
        proc.stderr.close()
    lines = last.decode(errors="replace").replace("\r", "\n").strip().splitlines()
    lines = [line for line in lines if not line.startswith(RELAY_PREFIX)]  # drawn, not said
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    return errors[-1] if errors else lines[-1] if lines else ""


def without_error_lines(text: bytes) -> tuple[bytes, bytes]:
    """(what to show now, what to hold) of ``split_output``: the lines held back are not shown."""
    return split_output(text)[:2]


def split_output(text: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(what to show now, what to hold, the progress lines): ``text``'s lines (ended by a newline or a carriage
    return: a progress bar's) but those that begin with the command's ``ERROR_PREFIX`` or the progress relay's
    ``RELAY_PREFIX`` (those returned apart, the prefix kept), and its unfinished last line where it may still become
    one (a start of a prefix; a prefix and more); the rest of an unfinished line is shown as it comes."""
    prefixes = (ERROR_PREFIX.encode(), RELAY_PREFIX.encode())
    shown, progress, start = [], [], 0
    for index, byte in enumerate(text):
        if byte in b"\n\r":
            line = text[start:index]
            if line.startswith(prefixes[1]):
                progress.append(line)
            elif not line.startswith(prefixes[0]):
                shown.append(text[start : index + 1])
            start = index + 1
    rest = text[start:]
    if rest.startswith(prefixes) or any(prefix.startswith(rest) for prefix in prefixes):
        return b"".join(shown), rest, progress
    return b"".join(shown) + rest, b"", progress
