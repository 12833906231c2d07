"""Ridge regression in closed form, with its penalty chosen by exact leave-one-out error.

    fit = fit_ridge(inputs, targets)      # inputs [N, D], targets [N, M]; N may be far below D
    fit.predict(new_inputs)               # [B, M]

The intercept is not penalised: with an infinite penalty the prediction is the mean target. The fit is
done in the dual form, through the N x N kernel of the centred inputs, so it costs N^3 however large D
and M are (auto_microwave's predict mode: N ~ 70 baked paths, D = 512, M = stages x 512).

The penalty is the one of `penalties` (default: `DEFAULT_RELATIVE_PENALTIES` times the kernel's mean
eigenvalue) with the smallest leave-one-out error. That error needs no refits: for a linear smoother
y_hat = H y, the residual of example i left out is (y_i - y_hat_i) / (1 - H_ii); with the kernel's
eigendecomposition H is cheap for every penalty at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Penalties tried, relative to the mean eigenvalue of the centred kernel (trace / N), half a decade apart:
# from nearly interpolating the examples to nearly predicting their mean.
DEFAULT_RELATIVE_PENALTIES = tuple(10.0 ** (half / 2) for half in range(-6, 9))


@dataclass
class RidgeFit:
    """A fitted ridge regression: prediction = target_mean + (x - input_mean) @ weights."""

    input_mean: torch.Tensor  # [D]
    target_mean: torch.Tensor  # [M]
    weights: torch.Tensor  # [D, M]
    penalty: float
    loo_errors: dict[float, float]  # mean squared leave-one-out error (summed over outputs) per penalty tried

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predictions [B, M] for inputs [B, D] (or [M] for one input [D])."""
        return (self.target_mean + (inputs.double() - self.input_mean) @ self.weights).float()


def fit_ridge(inputs: torch.Tensor, targets: torch.Tensor,
              penalties: tuple[float, ...] | None = None) -> RidgeFit:
    """Fit targets [N, M] from inputs [N, D] (N >= 2), the penalty chosen by exact leave-one-out error.

    `penalties`: absolute penalties to choose from; None: `DEFAULT_RELATIVE_PENALTIES` scaled by the kernel.
    """
    if inputs.dim() != 2 or targets.dim() != 2 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs [N, D] and targets [N, M] expected, got {list(inputs.shape)} and "
                         f"{list(targets.shape)}")
    count = inputs.shape[0]
    if count < 2:
        raise ValueError(f"a ridge fit needs at least 2 examples, got {count}")
    inputs, targets = inputs.double(), targets.double()
    input_mean, target_mean = inputs.mean(dim=0), targets.mean(dim=0)
    centred_inputs, centred_targets = inputs - input_mean, targets - target_mean
    kernel = centred_inputs @ centred_inputs.T
    eigenvalues, eigenvectors = torch.linalg.eigh(kernel)
    eigenvalues = eigenvalues.clamp(min=0)
    if penalties is not None and (not penalties or min(penalties) <= 0):
        raise ValueError(f"penalties must be positive, got {penalties}")
    if penalties is None:
        scale = float(eigenvalues.sum()) / count or 1.0
        penalties = tuple(scale * relative for relative in DEFAULT_RELATIVE_PENALTIES)
    projected = eigenvectors.T @ centred_targets  # [N, M]
    loo_errors = {}
    for penalty in penalties:
        shrink = eigenvalues / (eigenvalues + penalty)
        fitted = eigenvectors @ (shrink[:, None] * projected)
        # the hat matrix's diagonal: 1/N from the mean, plus the ridge part's
        leverage = 1.0 / count + (eigenvectors ** 2 * shrink).sum(dim=1)
        residuals = (centred_targets - fitted) / (1 - leverage).clamp(min=1e-9)[:, None]
        loo_errors[float(penalty)] = float((residuals ** 2).sum(dim=1).mean())
    penalty = min(loo_errors, key=loo_errors.get)
    dual = eigenvectors @ (projected / (eigenvalues + penalty)[:, None])  # (K + penalty I)^-1 Y
    return RidgeFit(input_mean, target_mean, centred_inputs.T @ dual, penalty, loo_errors)
