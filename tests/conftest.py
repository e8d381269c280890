import os

import pytest

from testkit import TINY_MODEL

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_model_cfg():
    from peftlab.config import ModelConfig

    return ModelConfig(**TINY_MODEL)
