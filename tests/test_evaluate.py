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


def test_f1_and_matthews_from_a_confusion_matrix_are_glues_scores():
    from peftlab.training.metrics import confusion_scores

    # labels x predictions: TN 5, FP 1, FN 2, TP 4
    scores = confusion_scores(torch.tensor([[5, 1], [2, 4]]))
    assert scores["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert scores["matthews"] == pytest.approx((4 * 5 - 1 * 2) / (5 * 6 * 6 * 7) ** 0.5)
    # sklearn's documented example: y_true [1, 1, 1, 0], y_pred [1, 0, 1, 1] -> -0.33
    assert confusion_scores(torch.tensor([[0, 1], [1, 2]]))["matthews"] == pytest.approx(-1 / 3)
    three = confusion_scores(torch.tensor([[3, 0, 0], [0, 2, 0], [0, 0, 4]]))
    assert three == {"f1": None, "matthews": pytest.approx(1.0)}
    assert confusion_scores(torch.tensor([[3, 0], [4, 0]])) == {"f1": 0.0, "matthews": 0.0}  # one class predicted


def test_evaluate_reports_f1_and_matthews_of_the_predictions():
    from peftlab.training.evaluate import evaluate

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x  # the inputs are the logits

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 0, 1, 1])  # predictions 0, 1, 1, 0, 1: TN 1, FP 1, FN 1, TP 2
    dataset = torch.utils.data.TensorDataset(logits, labels)
    got = evaluate(Fixed(), dataset, 2, torch.device("cpu"), "fp32", "test")
    assert got["top1"] == pytest.approx(3 / 5)
    assert got["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert got["matthews"] == pytest.approx((2 * 1 - 1 * 1) / (3 * 3 * 2 * 2) ** 0.5)


def test_f1_and_matthews_cost_memory_in_proportion_to_the_classes_not_their_square():
    """A head of a million classes (one label of 999,999 in a file list, say): a classes x classes
    confusion matrix would ask for 8 TB; the scores need only per-class counts."""

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    logits = torch.zeros(4, 1_000_000)
    logits[torch.arange(4), torch.tensor([0, 1, 999_999, 1])] = 1.0
    dataset = torch.utils.data.TensorDataset(logits, torch.tensor([0, 1, 999_999, 0]))
    got = evaluate(Fixed(), dataset, 2, torch.device("cpu"), "fp32", "test")
    assert got["top1"] == pytest.approx(3 / 4) and got["f1"] is None
    # per class (0, 1, 999,999): labelled (2, 1, 1), predicted (1, 2, 1), hits (1, 1, 1)
    assert got["matthews"] == pytest.approx((3 * 4 - (2 + 2 + 1)) / ((16 - 6) * (16 - 6)) ** 0.5)
