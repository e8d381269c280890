"""Training monitors: gradient flow, adapter statistics and rank use, convergence, frozen base.

The recipe enters them by one visible call at its log and eval points::

    if monitor.due(step + 1):           # gradients exist until apply_update zeroes them
        log(monitor.observe(step + 1, grad_norm))

``observe`` returns one record for ``monitors.jsonl`` (and every tracking sink);
``summarize`` turns the run's records into result.json's ``health``, ``monitors``,
``convergence`` and ``frozen_base`` sections. Tuners know nothing of monitors.

convergence.py and health.py are plain Python (no torch), so they can read run files
anywhere; this package's ``__init__`` imports nothing for that reason (the recipe imports
``peftlab.monitors.run``).
"""
