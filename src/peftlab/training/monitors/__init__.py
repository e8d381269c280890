"""Training monitors: gradient flow, adapter statistics and rank use, convergence, frozen base.

The recipe's ``training_step`` enters them by one visible call at its log and eval points,
on the raw gradients (after ``tuner.after_backward``, before clipping)::

    observed = monitor.observe(step + 1, grad_norm) if monitor is not None and monitor.due(step + 1) else None

and the loop logs the record it returns.

``observe`` returns one record for ``monitors.jsonl`` (and every tracking sink);
``summarize`` turns the run's records into result.json's ``health``, ``monitors``,
``convergence`` and ``frozen_base`` sections. Tuners know nothing of monitors.

convergence.py and health.py are plain Python (no torch), so they can read run files
anywhere; this package's ``__init__`` imports nothing for that reason (the recipe imports
``peftlab.training.monitors.run``).
"""
