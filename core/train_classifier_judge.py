"""Train the classifier judge on the second renderer's scenes (core/other_scenes.py), never on core/scenes.py.

    python -m core.train_classifier_judge                      # writes models/scenes-classifier.pt
    python -m core.train_classifier_judge --steps 200 --out /tmp/judge.pt

Every step draws a fresh batch of examples (core.classifier_judge_data: objects, two-object scenes and their
halves, clutter, empty and noise images, augmented) and minimises the cross-entropy of each head against
its target distribution. Then a temperature per head is fitted on examples of another seed (calibration:
the probabilities should mean what they say). One CPU thread by default; run it under `nice -n 10` on a
shared machine. The file records the settings; an existing file is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from core import cli
from core.classifier_judge import DEFAULT_ARCH, HEADS, SHIPPED, ClassifierJudge, SceneClassifier, save_classifier_judge
from core.classifier_judge_data import KINDS, training_batch
from core.errors import UserError


@dataclasses.dataclass
class TrainSettings:
    """How to train: steps of `batch_size` fresh examples, AdamW at `lr` (warm-up, then cosine decay)."""

    out: Path = SHIPPED["scenes-classifier"]
    overwrite: bool = False
    steps: int = 2200
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    calibration_seed: int = 777
    calibration_examples: int = 2048
    threads: int = 1
    log_every: int = 100


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(target * log softmax(logits))."""
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def learning_rate(settings: TrainSettings, step: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `steps`."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(settings: TrainSettings, arch: dict | None = None) -> ClassifierJudge:
    """Train a classifier judge from scratch (seeded) and calibrate it; returns it (not saved)."""
    arch = dict(arch or DEFAULT_ARCH)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = SceneClassifier(**arch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    began, running = time.monotonic(), 0.0
    # A documented optimiser loop: fresh examples every step, one loss per head summed.
    for step in range(settings.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(settings, step)
        images, targets = training_batch(rng, settings.batch_size, arch["resolution"])
        model.train()
        logits = model(images)
        loss = sum(soft_cross_entropy(logits[head], targets[head]) for head in HEADS)
        if not torch.isfinite(loss):
            raise RuntimeError(f"the loss became {loss.item()} at step {step}")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running += loss.item()
        if (step + 1) % settings.log_every == 0:
            minutes = (time.monotonic() - began) / 60
            print(f"step {step + 1}/{settings.steps}  loss {running / settings.log_every:.3f}  {minutes:.1f} min",
                  flush=True)
            running = 0.0
    minutes = (time.monotonic() - began) / 60
    judge = ClassifierJudge(model.eval())
    judge.temperatures = calibrate(model, settings, arch["resolution"])
    judge.training = {**{key: (str(value) if isinstance(value, Path) else value)
                         for key, value in dataclasses.asdict(settings).items() if key not in ("out", "overwrite")},
                      "kinds": dict(KINDS), "minutes": round(minutes, 1), "torch": str(torch.__version__),
                      "data": "core/other_scenes.py via core/classifier_judge_data.py"}
    return judge


@torch.no_grad()
def _logits(model: SceneClassifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
    model.eval()
    return model(images)


def calibrate(model: SceneClassifier, settings: TrainSettings, resolution: int) -> dict[str, float]:
    """A temperature per head that minimises the cross-entropy on examples of `calibration_seed`."""
    rng = np.random.default_rng(settings.calibration_seed)
    batches = [training_batch(rng, 256, resolution) for _ in range(max(1, settings.calibration_examples // 256))]
    logits = {head: torch.cat([_logits(model, images)[head] for images, _ in batches]) for head in HEADS}
    targets = {head: torch.cat([batch_targets[head] for _, batch_targets in batches]) for head in HEADS}
    temperatures = {}
    for head in HEADS:
        log_temperature = torch.zeros((), requires_grad=True)
        optimiser = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=50)

        def closure():
            optimiser.zero_grad()
            loss = soft_cross_entropy(logits[head] / log_temperature.exp(), targets[head])
            loss.backward()
            return loss

        optimiser.step(closure)
        temperatures[head] = float(log_temperature.detach().exp().clamp(0.25, 4.0))
    print("calibrated temperatures: " + ", ".join(f"{head} {value:.2f}" for head, value in temperatures.items()))
    return temperatures


HELP = {
    "steps": "training steps (one fresh batch each)", "batch_size": "examples per step", "seed": "training seed",
    "calibration_seed": "seed of the examples the temperatures are fitted on",
    "calibration_examples": "examples for fitting the temperatures", "threads": "CPU threads",
    "log_every": "print the loss every this many steps", "lr": "peak learning rate (AdamW)",
    "weight_decay": "AdamW weight decay",
}


def main() -> None:
    parser = cli.Parser(description=__doc__, formatter_class=cli.Formatter)
    defaults = TrainSettings()
    parser.add_argument("--out", type=Path, default=defaults.out, help="the model file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    for name in ("steps", "batch_size", "seed", "calibration_seed", "calibration_examples", "threads", "log_every"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name), help=HELP[name])
    for name in ("lr", "weight_decay"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name), help=HELP[name])
    args = parser.parse_args()
    settings = TrainSettings(**vars(args))
    if settings.steps < 1 or settings.batch_size < 1 or settings.threads < 1 or settings.log_every < 1:
        raise UserError("--steps, --batch-size, --threads and --log-every must be at least 1")
    if settings.out.exists() and not settings.overwrite:
        raise UserError(f"{settings.out} exists; pass --overwrite to replace it")
    torch.set_num_threads(settings.threads)
    judge = train(settings)
    path = save_classifier_judge(judge, DEFAULT_ARCH, settings.out, overwrite=settings.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {judge.training['minutes']} min of training)")


if __name__ == "__main__":
    cli.run(main)
