"""``evaluate``'s counts per class (issue 72): a classifier's split counted class by class, and its confusion matrix
up to CONFUSION_MAX_CLASSES classes, equal to those numpy counts from the model's own predictions; none for a causal
LM, whose "classes" are its vocabulary, and none for a split evaluate did not score."""

import numpy as np
import pytest
import torch
from torch import nn

from peftlab.training.evaluate import evaluate, not_evaluated
from peftlab.training.run_result import CONFUSION_MAX_CLASSES, key_problems

CPU = torch.device("cpu")


def numpy_confusion(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> np.ndarray:
    with torch.no_grad():
        predicted = model(images).argmax(-1).numpy()
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.numpy(), predicted), 1)
    return matrix


@pytest.mark.parametrize("classes", [2, 7, CONFUSION_MAX_CLASSES])
def test_the_counts_are_the_confusion_matrix_of_the_models_predictions(classes):
    """A small MLP on random inputs, in batches of 16 that do not divide the 203 examples."""
    torch.manual_seed(classes)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, classes))
    images, labels = torch.randn(203, 8), torch.randint(0, classes, (203,))
    got = evaluate(model, torch.utils.data.TensorDataset(images, labels), 16, CPU, "fp32", "test")["per_class"]
    matrix = numpy_confusion(model, images, labels, classes)
    assert got["confusion"] == matrix.tolist()
    assert got["labelled"] == matrix.sum(axis=1).tolist()
    assert got["predicted"] == matrix.sum(axis=0).tolist()
    assert got["correct"] == np.diag(matrix).tolist()
    assert set(got) == {"labelled", "predicted", "correct", "confusion"}


def test_beyond_the_bound_only_the_counts_per_class_are_recorded():
    classes = CONFUSION_MAX_CLASSES + 1
    torch.manual_seed(0)
    model = nn.Linear(4, classes)
    images, labels = torch.randn(300, 4), torch.randint(0, classes, (300,))
    got = evaluate(model, torch.utils.data.TensorDataset(images, labels), 64, CPU, "fp32", "test")["per_class"]
    matrix = numpy_confusion(model, images, labels, classes)
    assert got["confusion"] is None
    assert (got["labelled"], got["correct"]) == (matrix.sum(axis=1).tolist(), np.diag(matrix).tolist())


def test_a_causal_lm_and_an_unscored_split_have_no_counts_per_class():
    class Tokens(nn.Module):
        def forward(self, x):  # (B, vocabulary, L - 1) logits against (B, L - 1) targets
            return x

    class TokenSplit:  # a split of whole batches, as the text data path hands them over
        def __init__(self, logits, targets):
            self.logits, self.targets = logits, targets

        def __len__(self):
            return len(self.logits)

        def load_batch(self, indices):
            return self.logits[indices], self.targets[indices]

        def transform(self, x):
            return x

    split = TokenSplit(torch.randn(4, 11, 5), torch.randint(0, 11, (4, 5)))
    got = evaluate(Tokens(), split, 2, CPU, "fp32", "test")
    assert got["perplexity"] is not None and got["per_class"] is None and got["predictions"] is None
    assert not_evaluated()["per_class"] is None and not_evaluated()["predictions"] is None


def test_each_examples_label_and_predicted_class_are_kept_in_order():
    """What a tuning trial keeps (issue 82 item 9): (label, predicted) of every example, batches that do not divide
    the split included, whose mean agreement is the split's top-1."""
    torch.manual_seed(3)
    model = nn.Linear(8, 5)
    images, labels = torch.randn(203, 8), torch.randint(0, 5, (203,))
    got = evaluate(model, torch.utils.data.TensorDataset(images, labels), 16, CPU, "fp32", "val")
    with torch.no_grad():
        predicted = model(images).argmax(-1)
    assert torch.equal(got["predictions"], torch.stack([labels, predicted]))
    assert (predicted == labels).double().mean().item() == pytest.approx(got["top1"], abs=1e-12)


def test_a_completed_record_without_per_class_is_one_key_short():
    """The record names the key, so a completed run of this version always writes it (null where nothing is
    counted); an older run's file lacks it and reads as it was written."""
    assert "missing per_class" in key_problems({"status": "completed"})
