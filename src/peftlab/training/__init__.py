"""Training one run: ``run.train`` (the run directory, its lock, attempts) calls ``recipe.run``,
the recipe every method uses, which reads top to bottom in one screen. The rest are its parts:
``runtime`` (seed, threads, device, precision), ``step`` (one optimizer step), ``evaluate``,
``checkpoint`` (the run's position on disk), ``preflight`` (memory) and ``distributed`` (torchrun).

Nothing is imported here: ``peftlab.training.runtime`` stays importable without the recipe.
"""
