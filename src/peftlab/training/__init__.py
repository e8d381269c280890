"""Training one run: ``run.train`` (the run directory, its lock, attempts) calls ``recipe.run``,
the recipe every method uses, which reads top to bottom in one screen. The rest are its parts:
``recipe_state`` (what its stages hand each other), ``runtime`` (seed, threads, device, precision),
``step`` (one optimizer step), ``evaluate``, ``outcome`` (the run's end: tests, merge check, adapter
files, result.json's record), ``checkpoint`` (the run's position on disk), ``preflight`` (memory)
and ``distributed`` (torchrun). Beside them: ``metrics``, ``run_result`` (result.json's typed record) with
``result_reference`` (its docs), ``export`` (``peftlab export``), ``device_check``; ``monitors/`` (what a run
watches: gradients, adapters, convergence, health, cost), ``tracking/`` (metrics.jsonl, TensorBoard, MLflow, W&B)
and ``bases/`` (the offline pretrained bases the recipe trains: pretrain, text_base).

Nothing is imported here: ``peftlab.training.runtime`` stays importable without the recipe.
"""
