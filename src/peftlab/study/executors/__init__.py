"""Where a study's runs execute: one worker process per run (local), long-lived spawned workers (spawn),
Slurm through submitit (slurm, slurm_requeue), Ray (ray_tasks), the choice among them (executors) and what a
worker does with one run (worker); a study file's executor: section (section) and --detach's chain of Slurm jobs
(detach).
"""
