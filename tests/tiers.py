"""The suite's two tiers: `make test` (the README's command, CI's) and `make test-full`.

`make test` runs every test but the further cases of scenarios it already runs once: another timing or start
method of the same Ctrl-C, another signal of the same stop, a second executor's copy of a search, a variant
whose code path a kept test walks end to end. Those are ``FULL`` below, each with the kept test that covers its
path and its wall seconds in the profile of 2026-11-30 (run l: 1,642 s of pytest on an Intel Xeon, 444 s of
its 3,221 test-seconds are these; the 11 added later that day, in an AVX2-only AMD EPYC's profile: 311 of its
4,622; the one added 2026-12-01 in that class's profile of 2026-11-30). So that none of them rots unseen, `make
test` runs a sixth of them too: the shard ``int(commit[:8], 16) % SHARDS`` of the checked-out commit, each shard
about as long as another (``PEFTLAB_TEST_SHARD=K`` picks one, ``all`` takes every one). `make test-full` runs them
all. Six shards since 2026-12-01 (four before): each case runs on about one landing in six.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

SHARDS = 6
ENV_TIER = "PEFTLAB_TEST_TIER"  # "ci" (make test): the full tier's shard only; unset or "full": everything
ENV_SHARD = "PEFTLAB_TEST_SHARD"

EARLY = "tests/study/test_early_interrupt.py::test_ctrl_c_in_the_first_seconds_is_one_line"
STOPPING = "tests/study/test_runner.py::test_stopping_the_study_leaves_no_worker_and_resumable_runs"
PREEMPTED = "tests/study/test_slurm_real.py::test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_result"
EXECUTORS = "tests/study/test_executors.py"

# node id: (wall seconds in run l, the test `make test` keeps on the same path)
FULL: dict[str, tuple[float, str]] = {
    f"{EARLY}[forkserver-1.5]": (15.0, "[forkserver-0.0]"),
    f"{EARLY}[worker-0.0]": (11.1, "[worker-0.3]"),
    f"{EARLY}[spawned-0.0]": (11.1, "[spawned-1.5]"),
    f"{STOPPING}[ctrl-c-spawn]": (15.0, "[ctrl-c-forkserver]; test_spawn.py's stop_when in a spawned worker"),
    f"{STOPPING}[sigterm-forkserver]": (13.0, "[ctrl-c-forkserver]; test_train_kills.py's SIGTERM of a run"),
    f"{PREEMPTED}[10-timed-out]": (16.6, "[60-preempted]: the same requeue, another signal delay"),
    "tests/study/test_slurm_real.py::test_a_preempted_pretraining_job_is_requeued_and_the_study_goes_on": (
        19.6,
        "the preempted run's requeue; test_executors.py's pretraining through submitit",
    ),
    "tests/study/test_slurm_real.py::test_a_scancel_the_controller_does_not_answer_is_one_line": (
        18.7,
        "test_ctrl_c_of_the_driver_cancels_its_slurm_jobs",
    ),
    f"{EXECUTORS}::test_ctrl_c_of_the_driver_stops_its_jobs[ray]": (19.0, "test_slurm_real.py's Ctrl-C of the driver"),
    f"{EXECUTORS}::test_searches_through_ray_and_submitit_run_side_by_side_with_the_local_trials": (
        61.0,
        "the Ray and submitit studies equal to the local one; test_tuning_study.py's searches side by side",
    ),
    "tests/study/test_spawn.py::test_a_spawn_worker_killed_mid_run_resumes_to_the_uninterrupted_forkserver_study": (
        40.2,
        "test_spawn.py's stop_when; test_runner.py's SIGKILL then rerun",
    ),
    "tests/test_bench.py::test_bench_compile_figures_time_compiled_against_eager_steps": (
        29.7,
        "test_train.py's compiled run; test_bench_bare.py's eager steps",
    ),
    "tests/study/test_tuning_study.py::test_a_killed_search_resumes_without_training_a_finished_trial_again": (
        31.9,
        "test_halving_grid.py's search killed after a rung",
    ),
    "tests/test_cli_imports.py::test_timm_imported_by_peftlab_leaves_wandb_out_which_imports_after_it": (
        21.3,
        "the tracking tests' wandb sink, imported after timm",
    ),
    "tests/test_hostile_cli.py::test_a_closed_pipe_ends_quietly[study]": (20.8, "the other five commands' cases"),
    "tests/study/test_gpu_workers.py::test_each_worker_of_a_study_gets_one_visible_gpu_and_its_runs_record_it"
    "[spawn-2]": (17.4, "[forkserver-4]"),
    "tests/test_quant_load.py::test_building_a_base_from_its_file_peaks_near_what_it_keeps": (
        43.8,
        "test_quant_load.py's builds of the same bases, bit for bit (not their peak)",
    ),
    "tests/test_preflight.py::test_validate_of_a_legal_large_token_config_never_runs_it_at_full_size[prompts]": (
        8.4,
        "[patches]",
    ),
    "tests/study/test_outside_causes.py::test_a_worker_killed_by_sigkill_stays_pending_and_the_same_command_"
    "resumes_it": (
        12.4,
        "test_runner.py's SIGKILL then rerun",
    ),
    "tests/tuners/test_plugins.py::test_a_spawned_worker_finds_the_plugin_from_its_entry_point": (
        9.5,
        "the plugin's tuned study in forked workers",
    ),
    # added 2026-11-30, their seconds from the profile of an AVX2-only AMD EPYC (about 1.8 times run l's): each
    # starts processes of its own (their imports about 11 CPU s each there) on a path a kept test walks too
    "tests/test_bench_bare.py::test_the_bare_figure_times_compiled_steps_too": (
        62.9,
        "test_train.py's compiled run; test_bench_bare.py's eager steps beside the bare loop's",
    ),
    "tests/test_cli_imports.py::test_params_counts_lora_on_the_meta_model_without_peft": (
        35.2,
        "test_a_study_dry_run_imports_no_peft: LoRA counted on meta models, no PEFT",
    ),
    "tests/test_cli_imports.py::test_train_of_an_unquantized_lora_run_imports_no_bitsandbytes": (
        27.9,
        "tests/study/test_worker_imports.py's unquantized LoRA run: the same switch in a study's worker",
    ),
    "tests/test_cli_imports.py::test_a_warm_validate_of_a_run_on_a_local_weights_file_imports_no_torch": (
        20.8,
        "test_params_of_a_local_hf_directory_imports_no_torch_once_recorded: a record read instead of torch",
    ),
    "tests/test_libraries.py::test_an_hf_models_run_keeps_transformers_bars_and_records_off_stderr": (
        28.7,
        "test_a_run_keeps_the_libraries_chatter_in_its_library_log",
    ),
    f"{EXECUTORS}::test_ctrl_c_of_the_driver_stops_its_jobs[submitit]": (
        18.2,
        "test_slurm_real.py's Ctrl-C of the driver: submitit's jobs on a real Slurm",
    ),
    f"{EXECUTORS}::test_a_job_waits_for_a_run_another_process_trains": (
        15.2,
        "test_runner.py's two study processes on one directory",
    ),
    "tests/study/test_slurm_real.py::test_a_job_that_dies_without_a_result_is_lost_and_the_same_command_resumes_it": (
        24.9,
        "test_executors.py's submitit jobs lost and resumed by the same command",
    ),
    "tests/test_configs.py::test_matrix_dry_run": (
        23.2,
        "the vtab1k dry run beside it (in this process); test_study_validates[vit_peft_matrix.yaml]",
    ),
    "tests/study/test_journal.py::test_a_study_with_a_cut_journal_goes_on_without_training_again": (
        21.9,
        "the journal's damages in the tests above it; test_runner.py's SIGKILL then rerun",
    ),
    "tests/analysis/test_reproduce_supplied.py::test_every_run_rerun_from_the_data_copy_checked_reproduces_the_"
    "claims": (
        32.0,
        "test_reproduce.py's archive rerun elsewhere, every metric; test_reproduce_received.py's data kept outside",
    ),
    # added 2026-12-01, its seconds from the AVX2-only AMD EPYC's profile of 2026-11-30 (session 23's first CI)
    "tests/test_cli_imports.py::test_validate_of_a_quantized_lora_config_keeps_bitsandbytes": (
        10.9,
        "tests/study/test_worker_imports.py's quantized run: the same switch keeps bitsandbytes and PEFT's layers",
    ),
}


def shards() -> list[set[str]]:
    """``FULL`` in ``SHARDS`` groups of about equal seconds: the longest first, each to the lightest group."""
    groups: list[tuple[float, set[str]]] = [(0.0, set()) for _ in range(SHARDS)]
    for nodeid, (seconds, _) in sorted(FULL.items(), key=lambda item: (-item[1][0], item[0])):
        lightest = min(range(SHARDS), key=lambda k: (groups[k][0], k))
        total, members = groups[lightest]
        groups[lightest] = (total + seconds, members | {nodeid})
    return [members for _, members in groups]


@functools.cache  # asked by the header and by each worker's collection: one git call a process
def commit(repo: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    head = done.stdout.strip()
    return head if done.returncode == 0 and len(head) == 40 else None


def chosen_shard(repo: Path) -> int | None:
    """The shard `make test` runs: ``$PEFTLAB_TEST_SHARD`` (a number, or "all": None), else the commit's; shard 0
    outside a git checkout."""
    asked = os.environ.get(ENV_SHARD, "").strip()
    if asked == "all":
        return None
    if asked:
        if not asked.isdigit() or int(asked) >= SHARDS:
            raise ValueError(f"{ENV_SHARD}={asked!r}: expected a shard 0 to {SHARDS - 1}, or all")
        return int(asked)
    head = commit(repo)
    return int(head[:8], 16) % SHARDS if head else 0


def left_out(repo: Path) -> set[str]:
    """The node ids of the full tier `make test` leaves out: all but its shard's (none where ``all``)."""
    shard = chosen_shard(repo)
    if shard is None:
        return set()
    return set(FULL) - shards()[shard]


def header(repo: Path) -> str:
    shard = chosen_shard(repo)
    if shard is None:
        return f"tier ci: every one of the full tier's {len(FULL)} further cases ({ENV_SHARD}=all)"
    kept = shards()[shard]
    seconds = sum(FULL[nodeid][0] for nodeid in kept)
    return (
        f"tier ci: the full tier's shard {shard} of {SHARDS} ({len(kept)} of {len(FULL)} further cases, "
        f"{seconds:.0f} of {sum(s for s, _ in FULL.values()):.0f} s in the profile); make test-full runs all"
    )


def whole_suite(args: list[str], tests: Path) -> bool:
    """Whether pytest's arguments collect the whole suite: one of them is the tests folder or a folder above it
    (``pytest``, ``pytest tests``, ``pytest .``). Only then can a name of ``FULL`` that nothing collected be stale:
    ``pytest tests/data`` collects part of the suite and must not be stopped for the rest's names."""
    folder = tests.resolve()
    return any(Path(arg).is_dir() and folder.is_relative_to(Path(arg).resolve()) for arg in args)
