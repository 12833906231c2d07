"""Train a scenes CLIP contrastively on freshly drawn scenes and captions (core/scenes.py).

Every step draws a new batch: half random scenes (one or two objects), half "twins" of those scenes that
differ in exactly one attribute (colour, shape, size, position, background, or two objects swapped). The
twins are hard negatives: to tell a scene from its twin the model has to see that attribute (--shape-twins
makes more of them differ in shape, for close shapes such as circle and hexagon).
Loss: symmetric InfoNCE with a learnable logit scale, as in CLIP, plus a training-only auxiliary loss that
makes the image embedding say which colour and shape sit at each position. Reproducible from --seed.
With --adversarial R, half of every batch is first pushed (L2 radius R) toward the wrong captions
(core/adversarial.py): a guide trained so has gradients that draw shapes instead of fooling it. With
--drawn-negatives N, N captions a batch also get an image the outline drawer draws against the model, which
they must not pick (core/drawn_negatives.py).

    python -m core.train_scenes_clip --arch scenes --seed 0 --steps 3000 --batch-size 256 --out runs/scenes.pt

Without --out the weights go to models/ARCH.pt; an existing file (a shipped model) is replaced only with
--overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import clip
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core import cli, scenes, third_scenes
from core.adversarial import pgd_images
from core.drawn_negatives import DrawnNegatives, contrastive_with_negatives, draw_for_captions
from core.errors import UserError
from core.models import normalise_images
from core.scenes_clip import (ARCHS, build_scenes_clip, load_scenes_clip, read_scenes_clip_file, resolve_arch,
                              save_scenes_clip)
from core.scene_augment import augment
from core.scenes_eval import markdown_table, zero_shot_accuracy

# Where the weights go without --out; "{arch}" becomes the --arch name, so each arch has its own file.
DEFAULT_OUT = "models/{arch}.pt"
RENDERERS = ("scenes", "third")

# Training tokenises to this many positions instead of 77: captions are short, and with CLIP's causal mask
# the text embedding (read at the end-of-text token) does not depend on later positions, so the shipped
# 77-position model gives the same embeddings (the extra position rows are zeros, see scenes_clip).
TRAINING_CONTEXT = 32


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """One training stage, as the command's options set it (see `main` for what each means)."""
    seed: int = 0
    steps: int = 3000
    batch_size: int = 256
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.1
    threads: int = 1
    bf16: bool = False
    slot_weight: float = 1.0
    adversarial: float = 0.0       # > 0: half of every batch pushed toward the wrong captions
    attack_steps: int = 3
    negatives: DrawnNegatives | None = None
    shape_twins: float = 0.0       # share of the twins that differ in shape (`training_batch`)
    vary_drawing: bool = False     # warp, blur and recolour the drawings (`training_batch`)
    duplicate_twins: float = 0.0   # share of the twins that add a same-colour object (`training_batch`)
    renderer: str = "scenes"       # which code draws the scenes: RENDERERS
    init_from: str | None = None   # continue from these weights: a later stage
    max_minutes: float | None = None
    save_every: int = 500
    eval_n: int = 200
    eval_seed: int = 999_999

    def record(self, earlier_training: dict | None) -> dict:
        """What the saved model records about this stage (and, inside it, the earlier stages)."""
        record = dict(seed=self.seed, steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                      weight_decay=self.weight_decay, threads=self.threads, training_context=TRAINING_CONTEXT,
                      bf16=self.bf16, slot_weight=self.slot_weight, adversarial=self.adversarial,
                      attack_steps=self.attack_steps,
                      drawn_negatives=None if self.negatives is None else dataclasses.asdict(self.negatives),
                      data="core.scenes: half random scenes, half one-attribute twins; pixel noise up to 0.08",
                      init_from=earlier_training)
        # Recorded only when used, so the records of earlier models stay as they were.
        record.update({"shape_twins": self.shape_twins} if self.shape_twins > 0 else {})
        record.update({"vary_drawing": True} if self.vary_drawing else {})
        record.update({"duplicate_twins": self.duplicate_twins} if self.duplicate_twins > 0 else {})
        record.update({"renderer": self.renderer} if self.renderer != "scenes" else {})
        return record


def training_batch(rng: np.random.Generator, batch_size: int, image_size: int, shape_twins: float = 0.0,
                   vary_drawing: bool = False, duplicate_twins: float = 0.0, renderer: str = "scenes"
                   ) -> tuple[torch.Tensor, list[str], list[scenes.Scene]]:
    """(images [B, 3, S, S] in [0, 1] with a little noise, captions, scenes): scenes and one-attribute twins.

    A `shape_twins` share of the twins differ in shape (the rest in an attribute picked at random, one in six
    of them shape): a model trained on few shape twins confuses close shapes such as circle and hexagon.
    A `duplicate_twins` share of the twins of one-object scenes add a second object of the same colour on the
    opposite side (`scenes.with_duplicate`), captioned by their relation: one object named, one wanted.
    `vary_drawing` warps, blurs and recolours each image a little (core/scene_augment.py). `renderer` "third"
    draws the same scenes with core/third_scenes.py instead of core/scenes.py.
    """
    base = [scenes.sample_scene(rng) for _ in range(batch_size - batch_size // 2)]
    # No extra draw at 0, so models trained before the option existed stay reproducible from their seed.
    attributes = [("shape" if shape_twins > 0 and rng.random() < shape_twins else None) for _ in range(batch_size // 2)]
    twins = [scenes.vary_one_attribute(scene, rng, attribute) for scene, attribute in zip(base, attributes)]
    duplicated = [None] * len(twins)
    if duplicate_twins > 0:
        duplicated = [scenes.with_duplicate(scene, rng) if rng.random() < duplicate_twins else None
                      for scene in base[:len(twins)]]
        twins = [duplicate or twin for duplicate, twin in zip(duplicated, twins)]
    batch = base + twins
    captions = [scenes.caption(scene, rng) for scene in batch]
    for row, duplicate in enumerate(duplicated):  # always the relation: a caption naming one object is the base's
        if duplicate is not None:
            first, second = duplicate.objects
            captions[len(base) + row] = scenes.relation_caption(first, duplicate.relation, second)
    if renderer == "third":
        images = torch.stack([third_scenes.render(scene, image_size, rng) for scene in batch])
    else:
        images = torch.stack([scenes.render_scene(scene, image_size) for scene in batch])
    if vary_drawing:
        images = augment(images, torch.Generator().manual_seed(int(rng.integers(2 ** 62))))
    # Pixel noise of random strength, so the model also reads noisy (e.g. half-optimised) images.
    noise_strength = torch.from_numpy(rng.uniform(0.0, 0.08, size=(len(batch), 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32))
    images = (images + noise_strength * noise).clamp(0.0, 1.0)
    return images, captions, batch


# An auxiliary, training-only head reads from the image embedding, for each of the five positions, which
# colour and which shape is there (or nothing). Contrastive learning alone picks up colour quickly but shape,
# position and relations slowly; this direct signal makes the image tower encode them from the start.
# The head is thrown away after training: the shipped model is a plain clip.model.CLIP.
POSITION_NAMES = list(scenes.POSITIONS)
COLOUR_NAMES = list(scenes.COLOURS)
SHAPE_NAMES = list(scenes.SHAPES)


def slot_targets(batch: list[scenes.Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour, shape) class per scene and position, each [B, 5]: 0 = nothing there, else 1 + index."""
    colours = torch.zeros(len(batch), len(POSITION_NAMES), dtype=torch.long)
    shapes = torch.zeros(len(batch), len(POSITION_NAMES), dtype=torch.long)
    for row, scene in enumerate(batch):
        for obj in scene.objects:
            column = POSITION_NAMES.index(obj.position)
            colours[row, column] = 1 + COLOUR_NAMES.index(obj.colour)
            shapes[row, column] = 1 + SHAPE_NAMES.index(obj.shape)
    return colours, shapes


def make_slot_head(embed_dim: int) -> torch.nn.Linear:
    """Linear map from an image embedding to (colour, shape) logits for every position."""
    return torch.nn.Linear(embed_dim, len(POSITION_NAMES) * (1 + len(COLOUR_NAMES) + 1 + len(SHAPE_NAMES)))


def training_losses(model, slot_head: torch.nn.Linear, images: torch.Tensor, tokens: torch.Tensor,
                    batch: list[scenes.Scene], drawn: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(contrastive loss, auxiliary slot loss) of one batch.

    Contrastive: symmetric InfoNCE, image i belongs with caption i against every other caption and vice
    versa, logits scaled by the learnable temperature as in CLIP; `drawn` images (core/drawn_negatives.py)
    are extra candidates every caption has to pass over.
    """
    # Similarities of unit vectors lie close together; they are computed in float32 even under bfloat16
    # autocast, whose 8-bit mantissa would round away the small differences that hard negatives hinge on.
    shown = images if drawn is None else torch.cat([images, drawn])
    all_features = model.encode_image(normalise_images(shown)).float()
    image_features = all_features[:len(images)]
    text_features = model.encode_text(tokens).float()
    all_units = F.normalize(all_features, dim=-1)
    text_unit = F.normalize(text_features, dim=-1)
    contrastive = contrastive_with_negatives(all_units[:len(images)], text_unit, all_units[len(images):],
                                             model.logit_scale.exp())

    colour_targets, shape_targets = slot_targets(batch)
    slot_logits = slot_head(image_features).view(len(images), len(POSITION_NAMES), -1)
    colour_logits = slot_logits[..., : 1 + len(COLOUR_NAMES)]
    shape_logits = slot_logits[..., 1 + len(COLOUR_NAMES):]
    slot = (F.cross_entropy(colour_logits.flatten(0, 1), colour_targets.flatten())
            + F.cross_entropy(shape_logits.flatten(0, 1), shape_targets.flatten()))
    return contrastive, slot


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 5 % of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def vocabulary_token_ids() -> list[int]:
    """Token ids of every caption word plus start/end of text: the token-table rows worth saving."""
    tokens = clip.tokenize(scenes.caption_words())
    return sorted(set(tokens.flatten().tolist()) - {0})


def _initial_model(arch: str, shipped_arch: dict, init_from: str | None) -> tuple[torch.nn.Module, dict | None]:
    """A fresh model of `arch` (with the training context), or the weights of `init_from` and their record."""
    model = build_scenes_clip({**shipped_arch, "context_length": TRAINING_CONTEXT})
    if init_from is None:
        return model, None
    earlier_training = read_scenes_clip_file(init_from).get("training")
    state = load_scenes_clip(init_from).state_dict()
    state["positional_embedding"] = state["positional_embedding"][:TRAINING_CONTEXT]
    try:
        model.load_state_dict(state)
    except RuntimeError:  # tensors of other shapes: weights of another architecture
        raise UserError(f"--init-from {init_from} holds weights of another architecture than "
                        f"--arch {arch}") from None
    return model, earlier_training


def _optimiser(model: torch.nn.Module, slot_head: torch.nn.Linear, lr: float, weight_decay: float
               ) -> torch.optim.AdamW:
    """AdamW with no weight decay on gains, biases, embeddings and the logit scale, as usual for transformers."""
    decayed = [p for name, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in name]
    not_decayed = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in name)]
    return torch.optim.AdamW([{"params": decayed + list(slot_head.parameters()), "weight_decay": weight_decay},
                              {"params": not_decayed, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _adversarial_half(model, images: torch.Tensor, tokens: torch.Tensor, radius: float, steps: int,
                      generator: torch.Generator) -> torch.Tensor:
    """The batch with its first half replaced by images pushed toward the wrong captions (`pgd_images`).

    The attack raises the image-to-caption cross-entropy among that half's captions; batch-norm statistics
    stay fixed while it runs (eval mode), so the attack does not train them.
    """
    half = len(images) // 2
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens[:half]).float(), dim=-1)
    targets = torch.arange(half)

    def wrong_caption_loss(candidates: torch.Tensor) -> torch.Tensor:
        image = F.normalize(model.encode_image(normalise_images(candidates)).float(), dim=-1)
        return F.cross_entropy(model.logit_scale.exp() * image @ text.T, targets)

    model.eval()
    pushed = pgd_images(wrong_caption_loss, images[:half], radius, steps, generator)
    model.train()
    return torch.cat([pushed, images[half:]])


def _train_step(model: torch.nn.Module, slot_head: torch.nn.Linear, optimiser: torch.optim.Optimizer,
                rng: np.random.Generator, settings: TrainSettings, image_size: int,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """One optimiser step on a fresh batch of drawn scenes; returns the contrastive and slot losses."""
    images, captions, batch = training_batch(rng, settings.batch_size, image_size, settings.shape_twins,
                                             settings.vary_drawing, settings.duplicate_twins, settings.renderer)
    tokens = clip.tokenize(captions, context_length=TRAINING_CONTEXT)
    drawn, negatives = None, settings.negatives
    if negatives is not None and negatives.count > 0:
        with torch.no_grad():
            text = F.normalize(model.encode_text(tokens[:negatives.count]).float(), dim=-1)
        drawn = draw_for_captions(model, text, image_size, negatives, generator)
    if settings.adversarial > 0:
        images = _adversarial_half(model, images, tokens, settings.adversarial, settings.attack_steps, generator)
    # bfloat16 matmuls would halve the CPU time, but a bfloat16 run learned colour only (the image
    # embeddings of different shapes and positions stayed equal to within bfloat16 rounding): off by default.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
        contrastive, slot = training_losses(model, slot_head, images, tokens, batch, drawn)
    loss = contrastive + settings.slot_weight * slot
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimiser.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))  # CLIP caps the temperature at 100
    return contrastive.item(), slot.item()


def train(arch: str, settings: TrainSettings, out: str) -> dict[str, float]:
    """Train a scenes CLIP of `arch` as `settings` say, save it to `out`; return held-out zero-shot accuracy.

    `settings.max_minutes` stops early (and saves) if the wall-clock budget runs out before the last step.
    `settings.init_from` continues from saved weights (a later stage on fresh data from the seed) instead of
    a fresh initialisation; the earlier stages' training record is kept inside the new one.
    """
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)  # the attacks' random starts
    shipped_arch = resolve_arch(arch)
    model, earlier_training = _initial_model(arch, shipped_arch, settings.init_from)
    image_size = shipped_arch["image_resolution"]
    slot_head = make_slot_head(shipped_arch["embed_dim"])
    optimiser = _optimiser(model, slot_head, settings.lr, settings.weight_decay)
    record, token_ids = settings.record(earlier_training), vocabulary_token_ids()

    def save(done_steps: int, seconds: float) -> None:
        training = {**record, "steps_done": done_steps, "train_seconds": round(seconds, 1)}
        save_scenes_clip(model, shipped_arch, out, token_ids, training)

    started = time.time()
    steps = done_steps = settings.steps
    progress = tqdm(range(steps), desc=f"training {arch}", mininterval=5.0)
    for step in progress:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, settings.lr, settings.warmup)
        contrastive, slot = _train_step(model, slot_head, optimiser, rng, settings, image_size, generator)
        progress.set_postfix(contrastive=f"{contrastive:.3f}", slot=f"{slot:.3f}",
                             scale=f"{model.logit_scale.exp().item():.1f}")
        if (step + 1) % settings.save_every == 0 and step + 1 < steps:
            save(step + 1, time.time() - started)
        if settings.max_minutes is not None and time.time() - started > 60 * settings.max_minutes:
            done_steps = step + 1
            print(f"stopping after {done_steps} steps: the {settings.max_minutes} minute budget is spent")
            break
    seconds = time.time() - started
    save(done_steps, seconds)

    # Evaluate what ships: the saved file, loaded back with the 77-position text context.
    accuracy = zero_shot_accuracy(load_scenes_clip(out), n=settings.eval_n, seed=settings.eval_seed)
    print(f"trained {arch} for {done_steps} steps of {settings.batch_size} in {seconds / 60:.1f} min "
          f"({settings.threads} thread(s)); saved {out}")
    print(markdown_table({f"{arch} (held-out seed {settings.eval_seed})": accuracy}))
    return accuracy


def output_path(out: str, arch: str, overwrite: bool) -> str:
    """`out` with "{arch}" filled in; an existing file there is a `UserError` unless `overwrite`."""
    out = out.replace("{arch}", arch)
    if Path(out).exists() and not overwrite:
        raise UserError(f"{out} already exists (a shipped model?): pass --overwrite to replace it, "
                        "or --out another file")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--arch", default="scenes", choices=sorted(ARCHS), help="architecture (core.scenes_clip.ARCHS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the drawn data")
    parser.add_argument("--steps", type=cli.int_at_least(1), default=3000, help="optimiser steps")
    parser.add_argument("--batch-size", type=cli.int_at_least(2), default=256, help="image-caption pairs per step")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup", type=cli.int_at_least(0), default=200, help="linear warm-up steps")
    parser.add_argument("--threads", type=cli.int_at_least(1), default=1, help="torch CPU threads")
    parser.add_argument("--save-every", type=cli.int_at_least(1), default=500, help="save a checkpoint every this many steps")
    parser.add_argument("--eval-n", type=cli.int_at_least(1), default=200, help="held-out scenes per attribute at the end")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster, but learned colour only)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early after this wall-clock time")
    parser.add_argument("--slot-weight", type=float, default=1.0, help="weight of the auxiliary slot loss")
    parser.add_argument("--adversarial", type=float, default=0.0,
                        help="L2 radius of the attack on half of each batch (0: clean training); see core/adversarial.py")
    parser.add_argument("--attack-steps", type=cli.int_at_least(1), default=3, help="gradient steps of each attack")
    parser.add_argument("--drawn-negatives", type=cli.int_at_least(0), default=0,
                        help="captions a batch that also get an image drawn against the model, which they must not "
                             "pick (core/drawn_negatives.py; 0: none)")
    parser.add_argument("--drawn-steps", type=cli.int_at_least(1), default=10, help="Adam steps of each drawing")
    parser.add_argument("--shape-twins", type=cli.finite_float(0.0, 1.0), default=0.0,
                        help="share of the twins that differ in shape (0: the attribute is drawn at random)")
    parser.add_argument("--duplicate-twins", type=cli.finite_float(0.0, 1.0), default=0.0,
                        help="share of the twins of one-object scenes that add a same-colour object on the opposite "
                             "side, captioned by their relation (0: none)")
    parser.add_argument("--renderer", choices=RENDERERS, default="scenes",
                        help="the code that draws the training scenes: core/scenes.py (the guide's) or "
                             "core/third_scenes.py (scenes-judge-3's)")
    parser.add_argument("--vary-drawing", action="store_true",
                        help="warp, blur and recolour each training image a little (core/scene_augment.py)")
    parser.add_argument("--init-from", default=None, help="continue from these saved weights (a second stage)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to save the weights ({arch}: the --arch name)")
    parser.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    args = parser.parse_args()
    out = output_path(args.out, args.arch, args.overwrite)
    negatives = DrawnNegatives(args.drawn_negatives, args.drawn_steps) if args.drawn_negatives else None
    train(args.arch, TrainSettings(
        seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        threads=args.threads, bf16=args.bf16, slot_weight=args.slot_weight, adversarial=args.adversarial,
        attack_steps=args.attack_steps, negatives=negatives, shape_twins=args.shape_twins,
        vary_drawing=args.vary_drawing, duplicate_twins=args.duplicate_twins, renderer=args.renderer,
        init_from=args.init_from, max_minutes=args.max_minutes, save_every=args.save_every, eval_n=args.eval_n), out)

if __name__ == "__main__":
    cli.run(main)  # a missing or damaged --init-from file: one line on stderr, no traceback
