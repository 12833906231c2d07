#!/usr/bin/env python3
"""Make an image for a prompt never baked, from the k nearest baked paths in the store.

Stage target = path-weight x (blend of the k paths) + (1 - path-weight) x prompt embedding.

  python auto_microwave.py "a red square" --k 2 --mode mean
"""
from core import app, cli


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompt", help="the new prompt")
    parser.add_argument("--k", type=int, default=2, help="how many nearest paths to blend")
    parser.add_argument("--mode", choices=["mean", "splice"], default="mean",
                        help="mean: per-stage mean of the paths; splice: each stage from one path at random")
    parser.add_argument("--path-weight", type=float, default=0.3, help="weight of the blended path")
    parser.add_argument("--leave-out", action="store_true", help="ignore a path baked for this very prompt")
    args = parser.parse_args()
    cli.run(lambda: app.auto_microwave_job(args))


if __name__ == "__main__":
    main()
