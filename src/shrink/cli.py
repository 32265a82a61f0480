"""The ``shrink`` command: ``shrink run RECIPE --out DIR``, ``shrink demo``, ``shrink stages``."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

__all__ = ["main"]


def _demo_recipe() -> Path:
    return Path(str(resources.files("shrink").joinpath("recipes/demo.yaml")))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="shrink", description="Make trained PyTorch models smaller and faster.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a recipe and write model, report.json and report.html")
    p_run.add_argument("recipe")
    p_run.add_argument("--out", required=True, help="output directory")
    p_run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints")
    p_run.add_argument("--quiet", action="store_true", help="no progress bars")
    p_run.add_argument("--ray-address", help="run search trials on this Ray cluster (default: a local Ray instance)")
    p_demo = sub.add_parser("demo", help="run the bundled demo recipe on the digits CNN")
    p_demo.add_argument("--out", default="out/demo")
    p_demo.add_argument("--quiet", action="store_true")
    sub.add_parser("stages", help="list the stage types recipes accept")
    args = parser.parse_args(argv)

    from shrink.errors import ShrinkError

    try:
        if args.command == "stages":
            from shrink.config import registered_types

            for name, cls in registered_types().items():
                doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
                print(f"{name:24s} {cls.family:14s} {doc}")
            return 0
        from shrink.recipe import run

        if getattr(args, "ray_address", None):
            os.environ["RAY_ADDRESS"] = args.ray_address
        recipe = _demo_recipe() if args.command == "demo" else Path(args.recipe)
        result = run(recipe, args.out, resume=getattr(args, "resume", False), progress=not args.quiet)
        from shrink.train.distributed import is_main

        if not is_main():  # under torchrun only rank 0 evaluates, writes and prints
            return 0
        print(result.report.render())
        print(
            f"wrote {result.out_dir / 'model.shrink'}, {result.out_dir / 'report.json'}, "
            f"{result.out_dir / 'report.html'}"
        )
        return 0
    except ShrinkError as exc:
        print(f"shrink: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
