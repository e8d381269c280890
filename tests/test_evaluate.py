"""Evaluation metrics: top-5 only where it can be missed."""

import pytest
import torch
from torch import nn

from peftlab.training.evaluate import evaluate


@pytest.mark.parametrize("classes, reported", [(5, False), (6, True), (10, True)])
def test_top5_is_reported_only_with_more_than_five_classes(classes, reported):
    """With 5 classes or fewer every label is in the top 5: 100% says nothing, so it is None."""
    torch.manual_seed(0)
    images, labels = torch.randn(12, 3), torch.arange(12) % classes
    dataset = list(zip(images, labels))
    result = evaluate(nn.Linear(3, classes), dataset, 5, torch.device("cpu"), "fp32", "test")
    assert 0.0 <= result["top1"] <= 1.0
    if reported:
        assert result["top1"] <= result["top5"] <= 1.0
    else:
        assert result["top5"] is None
