"""Optional Weights & Biases logging (`--wandb`: a job's `run.wandb`); wandb is imported only when asked for."""
from __future__ import annotations

import time

import torch

from core.errors import UserError


class Tracker:
    """Logs losses and images to wandb when enabled; does nothing otherwise. Use as a context manager."""

    def __init__(self, enabled: bool, job: str, config: dict, interval: float = 1.0):
        self.run = None
        self.interval = interval  # per-step losses are logged at most this often (each read syncs)
        self.last = 0.0
        if not enabled:
            return
        try:
            import wandb
        except ImportError:
            raise UserError("--wandb needs the wandb package (pip install wandb)") from None
        self.wandb = wandb
        self.run = wandb.init(project="bake-microwave", job_type=job, config=config)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        if self.run is not None:
            self.run.finish()

    def log(self, values: dict) -> None:
        if self.run is not None:
            self.run.log(values)

    def log_step(self, step: int, losses: torch.Tensor) -> None:
        if self.run is None:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.run.log({"step": step, "loss": float(losses.mean())})

    def log_image(self, key: str, image: torch.Tensor) -> None:
        if self.run is not None:
            array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype("uint8")
            self.run.log({key: self.wandb.Image(array)})
