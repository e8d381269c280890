"""The seed of a run: Python's, NumPy's and torch's random generators set from one number.

The recipe seeds once at its start and again just before the model is built (``peftlab.tuners.build``),
so a base without a weights file is the same random model in a run, its resume and its export.
"""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    # numpy and torch imported here: no utils module imports torch when it is imported
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
