"""The limits on what a user can ask for, in one place: each stops an absurd value with one line (exit 2)
before anything is allocated, so no input can take the machine down.

The settings' fields declare these as their `maximum` (a flag's type and the recipe check it, and `--help`
shows it); `check_output` and `check_batch` check the products of several options once they are known.
The values are generous for real use (a GPU box baking hundreds of prompts at once) and far below what
would exhaust a machine.
"""
from __future__ import annotations

from core.errors import UserError, cut

# images
MAX_SIZE = 4096  # side of the rendered image (--size, a recipe's or a path's size)
MAX_OUTPUT_PIXELS = 64 * 1024 * 1024  # a saved image after --upscale: (size x upscale)^2
MAX_UPSCALE = 1024  # --upscale alone (the product is checked with MAX_OUTPUT_PIXELS)
MAX_GIF_PIXELS = 256 * 1024 * 1024  # all frames of a --gif together, after --upscale
MAX_INPUT_PIXELS = 64 * 1024 * 1024  # a target or --init image, read from its header before decoding
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024  # a target or --init image file
MAX_QUANTIZE = 256  # colour levels per channel

# counts that allocate (or run for ever)
MAX_CUTN = 256  # augmented views per image per step
MAX_STAGES = 1000  # stages of a recipe or guides of a path
MAX_STEPS_PER_STAGE = 100_000
MAX_STEPS = 1_000_000  # normal.py --steps
MAX_META_STEPS = 100_000
MAX_UNROLL = 1000
MAX_STARTS = 256  # random starts a meta-step, held-out starts, augmented meta-views
MAX_POPULATION = 4096
MAX_BATCH = 4096  # prompts baked together
MAX_BATCH_PIXELS = 256 * 1024 * 1024  # pixels replayed at once: prompts x starts x size^2
MAX_SHAPE_PIXELS = 64 * 1024 * 1024  # the shapes drawer's cover of one image: shapes x size^2
MAX_SEEDS = 1000  # evaluate.py --seeds
MAX_K = 1000  # nearest paths (auto)
MAX_SEED = 2**32 - 1
MAX_WORKERS = 256  # --gpus cpu:N
MAX_CLAIM_TTL = 7 * 24 * 3600.0  # seconds (--claim-ttl); a claim that never expires would block its prompt
MAX_PATH_WEIGHT = 10.0  # |--path-weight| of auto

# text and files
MAX_PROMPT_CHARS = 2000  # CLIP reads 77 tokens (about 300 characters); --truncate cuts the rest
MAX_TARGETS = 32  # weighted targets in one prompt ('a | b:-0.5 | ...')
MAX_TARGET_WEIGHT = 1000.0  # |weight| of a weighted target
MAX_PROMPTS = 100_000  # prompts of one batch bake
MAX_PROMPT_FILE_BYTES = 16 * 1024 * 1024
MAX_RECIPE_BYTES = 64 * 1024
MAX_RECIPE_DEPTH = 32  # nesting of lists and mappings in a recipe
MAX_RECIPE_ITEMS = 10_000  # list items and mapping values in a recipe, all levels together
MAX_PATH_FILE_BYTES = 64 * 1024 * 1024  # a baked path file ([1000 stages, 4096] float32 is 16 MB)
MAX_CACHE_FILE_BYTES = 512 * 1024 * 1024  # the store's embedding cache (larger: not read, rebuilt)

# gradient-free meta-optimisers draw a population of candidates per prompt
POPULATION_METAS = ("cma", "ga", "anchored-cma", "anchored-es")


def check_output(size: int, upscale: int, frames: int = 0) -> None:
    """A saved image of side `size` x `upscale` (and `frames` of them in a GIF) within the limits."""
    side = size * upscale
    if side * side > MAX_OUTPUT_PIXELS:
        raise UserError(f"the saved image would be {side} x {side} pixels (--size {size} x --upscale {upscale}); "
                        f"at most {MAX_OUTPUT_PIXELS // 2**20} megapixels, so use a smaller --upscale")
    if frames and frames * side * side > MAX_GIF_PIXELS:
        raise UserError(f"the GIF would hold {frames} frames of {side} x {side} pixels; at most "
                        f"{MAX_GIF_PIXELS // 2**20} megapixels in all: use a larger --save-every or a smaller "
                        f"--upscale")


def check_batch(prompts: int, size: int, starts: int = 1, eval_starts: int = 1, meta: str = "",
                population: int = 1) -> None:
    """A bake of `prompts` prompts at once whose largest replay stays within MAX_BATCH_PIXELS: `starts` a
    meta-step, the held-out comparison's 2 x `eval_starts`, or for the gradient-free `meta`-optimisers a
    `population` of candidates a prompt, each from at least 2 starts."""
    per_prompt = max(starts, 2 * eval_starts, population * max(2, starts) if meta in POPULATION_METAS else 1)
    images = prompts * per_prompt
    if images * size * size > MAX_BATCH_PIXELS:
        raise UserError(f"a batch of {prompts} prompt(s) would replay {images} images of {size} x {size} pixels at "
                        f"once; at most {MAX_BATCH_PIXELS // 2**20} megapixels: use a smaller --batch-size or "
                        f"--size")


def check_image_header(file: str, width: int, height: int) -> None:
    """An input image (a target, --init) of `width` x `height` pixels, read from its header: within limits."""
    if width * height > MAX_INPUT_PIXELS:
        raise UserError(f"image {cut(file)} is {width} x {height} pixels; at most {MAX_INPUT_PIXELS // 2**20} "
                        f"megapixels are read")
