#!/usr/bin/env python3
"""The path store's own tool: what is in it, one path in full, removing paths, a gallery page of them all,
and importing the original tool's path files.

  python store.py list --sort change              # one line per path, the bakes that paid off most first
  python store.py show "a red circle"             # recipe, metrics, where its report is
  python store.py rm "a red circle" --yes         # remove it from the store
  python store.py gallery --model scenes          # outputs/gallery/index.html: every path's final image
  python store.py import old-baked/               # the original tool's files into the current format
"""
from core import cli, store_cli, store_jobs


def main() -> None:
    parser = store_cli.make_parser(__doc__)
    args = parser.parse_args()
    cli.run(lambda: store_jobs.run(store_cli.store_job(args)))


if __name__ == "__main__":
    main()
