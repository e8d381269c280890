"""peftlab: parameter-efficient fine-tuning studies of vision transformers and language models.

The Python API, for notebooks and scripts (docs/python-api.md): the code the ``peftlab`` commands call, each
function importing what it needs when called, so that ``import peftlab`` stays light (no torch)::

    import peftlab

    result = peftlab.train("configs/downstream.yaml", ["method.r=16"], run_dir="runs/r16")  # result.json's record
    peftlab.train({"method": {"name": "lora"}, "data": {"root": "images"}})  # a dict: its paths this folder's
    summary = peftlab.run_study("configs/studies/default.yaml", workers=2)                    # runs/default
    df = peftlab.load_results("runs/default")                                 # one row per run (pandas)
    tuner = peftlab.load_trained("runs/r16")                                  # tuner.model: the trained model
    peftlab.predict("runs/r16", ["cat.jpg"], top_k=3)                         # class names and probabilities

and one function per command beside them: ``export``, ``results``, ``report``, ``paper``, ``submission``,
``reproduce``, ``validate``, ``params``. They live in their own package, ``peftlab.cli.api`` (the floor below the
commands, which call it), and are re-exported here: ``dir(peftlab)`` shows them alone. A mistake is one
``peftlab.utils.errors.UserError`` naming the parameter; inside IPython it shows as its one line
(``peftlab.utils.errors``).
"""

from __future__ import annotations

# First, before anything heavy: the command's Ctrl-C waits for the command to take it (utils/startup.py).
from peftlab.utils.startup import hold_stops_for_the_command

hold_stops_for_the_command()

# The methods register their config classes in peftlab.config.methods, the built-ins and the finder of
# plugins: imported here, the registry is filled whatever peftlab module is imported first (timm's models
# register themselves the same way). It imports no torch.
import peftlab.tuners.plugins  # noqa: E402, F401
from peftlab.utils.errors import show_errors_short  # noqa: E402  (after the hold, as every import here)

show_errors_short()  # a UserError is its one line in IPython (and a short error in a script)

# The Python API: a package of its own (peftlab/cli/api/), re-exported here
from peftlab.cli.api import *  # noqa: E402, F403  (its __all__: the API's functions)
from peftlab.cli.api import __all__, __version__  # noqa: E402, F401


def __dir__() -> list[str]:
    """The public names alone (tab completion on ``peftlab.``): the API and ``__version__``, not the subpackages
    imported so far nor the helpers this module imports."""
    return [*sorted(__all__), "__version__"]
