"""The EMD loss at its minimum: finite loss and finite gradients where the predicted and true CDFs coincide.

The paper's loss takes a square root of the mean squared CDF difference. Its derivative is infinite at 0, so a
sample whose prediction equals its target exactly gave 0 x inf = NaN gradients, and the optimiser step after it
wrote NaN into every weight ("loss is nan" one step later). Exact equality is what a softmax saturated onto a
one-hot target gives in float32: Kuler's two-bin labels are one-hot for every theme whose mean rating is 1 star
(score 1) or lies within 0.005 of a score.
"""

from __future__ import annotations

import torch

from nima_train.losses import emd, emd_loss
from nima_train.model import NIMA


def _one_hot(batch: int, score: int) -> torch.Tensor:
    target = torch.zeros(batch, 10)
    target[:, score - 1] = 1.0
    return target


def test_emd_of_a_prediction_equal_to_its_target_has_a_zero_finite_gradient():
    target = torch.softmax(torch.randn(4, 10), -1)
    pred = target.clone().requires_grad_(True)
    loss = emd_loss(pred, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all() and torch.equal(pred.grad, torch.zeros_like(pred.grad))


def test_a_softmax_saturated_onto_a_one_hot_target_gives_finite_gradients_to_the_whole_batch():
    logits = torch.randn(8, 10)
    logits[0] = 0.0
    logits[0, 0] = 30.0  # exp(-30) ~ 1e-13: in float32 the CDF is 1.0 in every bin, as the target's
    logits.requires_grad_(True)
    target = torch.softmax(torch.randn(8, 10), -1)
    target[0] = _one_hot(1, 1)[0]
    pred = torch.softmax(logits, -1)
    assert emd(pred, target)[0].item() == 0.0  # the prediction coincides with the target exactly
    loss = emd_loss(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[1:].abs().sum() > 0  # the other samples still teach


def test_an_adam_step_on_a_saturated_sample_leaves_the_weights_finite_and_the_next_loss_finite():
    torch.manual_seed(0)
    model = NIMA("mobilenet_v2", weights="none")
    model.eval()  # fixed BatchNorm statistics: the same features in both passes
    with torch.no_grad():
        model.head[1].bias.zero_()
        model.head[1].bias[0] = 60.0  # every image predicted score 1, saturated
    images, target = torch.rand(4, 3, 32, 32), _one_hot(4, 1)
    target[1:] = torch.softmax(torch.randn(3, 10), -1)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    loss = emd_loss(model(images), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.head.parameters())
    assert torch.isfinite(emd_loss(model(images), target))


def test_emd_is_unchanged_away_from_zero():
    pred, target = torch.softmax(torch.randn(64, 10), -1), torch.softmax(torch.randn(64, 10), -1)
    cdf = torch.cumsum(pred, -1) - torch.cumsum(target, -1)
    assert torch.equal(emd(pred, target), cdf.abs().pow(2.0).mean(-1).pow(0.5))
