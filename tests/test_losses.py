"""The label losses against the original's formulas written out in float64 NumPy."""

import math

import numpy as np
import pytest
import torch

from compactvid.errors import ConfigError
from compactvid.losses import CrossEntropyLoss, HingeLoss, SoftmaxLoss, create_loss


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    predictions = rng.uniform(0.0, 1.0, size=(6, 9))
    labels = (rng.uniform(size=(6, 9)) < 0.3).astype(np.float64)
    labels[0] = 0  # a video without labels
    return predictions, labels


def test_cross_entropy_is_the_originals_formula(batch):
    p, y = batch
    expected = np.mean(np.sum(-(y * np.log(p + 1e-5) + (1 - y) * np.log(1 - p + 1e-5)), axis=1))
    got = CrossEntropyLoss()(torch.tensor(p), torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_stays_finite_at_saturated_probabilities():
    p = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0]])  # both maximally wrong: each class costs -log(1e-5)
    assert CrossEntropyLoss()(p, y).item() == pytest.approx(-2 * math.log(1e-5), rel=1e-6)


def test_cross_entropy_gradient_flows_to_predictions(batch):
    p, y = batch
    predictions = torch.tensor(p, requires_grad=True)
    CrossEntropyLoss()(predictions, torch.tensor(y)).backward()
    expected = (-(y / (p + 1e-5)) + (1 - y) / (1 - p + 1e-5)) / p.shape[0]
    np.testing.assert_allclose(predictions.grad.numpy(), expected, rtol=1e-10)


def test_hinge_is_the_originals_formula(batch):
    p, y = batch
    scores = 3 * p - 1.5  # hinge expects scores around +-1
    expected = np.mean(np.sum(np.maximum(0.0, 1.0 - (2 * y - 1) * scores), axis=1))
    assert HingeLoss()(torch.tensor(scores), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-12)


def test_softmax_loss_normalizes_labels_and_ignores_unlabeled_videos(batch):
    p, y = batch
    log_softmax = p - np.log(np.sum(np.exp(p), axis=1, keepdims=True))
    weights = y / np.maximum(y.sum(axis=1, keepdims=True), 1e-7)
    expected = np.mean(-np.sum(weights * log_softmax, axis=1))
    got = SoftmaxLoss()(torch.tensor(p), torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert SoftmaxLoss()(torch.tensor(p[:1]), torch.tensor(y[:1])).item() == 0.0


def test_losses_are_chosen_by_the_originals_names():
    assert isinstance(create_loss("CrossEntropyLoss"), CrossEntropyLoss)
    assert isinstance(create_loss("HingeLoss"), HingeLoss)
    assert isinstance(create_loss("SoftmaxLoss"), SoftmaxLoss)
    with pytest.raises(ConfigError, match="--label_loss='Nope'.*CrossEntropyLoss, HingeLoss, SoftmaxLoss"):
        create_loss("Nope")
