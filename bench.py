#!/usr/bin/env python3
"""Benchmark baking's inner loop against the hardware's ceiling and the original tool's loop shape.

Measures, in one run: CLIP image forward+backward w.r.t. the input at a large batch (the ceiling,
images/s), the inner loop `core.render.replay` on P prompts at once (prompt-steps/s, for every P of
--prompts that fits in memory) and the original loop shape (batch 1, fp32, a new AdamW each stage, one
cutout); prints a markdown table of the figures and their ratios.

  python bench.py                                          # ViT-B/32 (random init) on the GPU
  python bench.py --device cpu --prompts 1,8 --cutn 2 --steps 4 --threads 2
"""
from core import bench, cli


def main() -> None:
    parser = cli.make_parser(__doc__, recipe=False)
    parser.set_defaults(model=bench.VIT_B_32)
    parser.add_argument("--prompts", type=bench.counts_arg, default=[1, 8, 64, 256],
                        help="numbers of prompts P baked at once to measure (as memory allows)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--cutn", type=int, default=8, help="augmented views per image per step")
    parser.add_argument("--steps", type=int, default=30, help="inner steps in each timed run")
    parser.add_argument("--ceiling-batch", type=int,
                        help="batch of the ceiling measurement (default 512 on CUDA, 16 on CPU)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each measurement; the best counts")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    args = parser.parse_args()
    cli.run(lambda: bench.bench_job(args))


if __name__ == "__main__":
    main()
