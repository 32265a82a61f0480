"""The ``shrink`` command: ``shrink run RECIPE --out DIR``, ``shrink demo``, ``shrink stages [TYPE]``,
``shrink --version``; also ``python -m shrink``."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

__all__ = ["main"]


def _demo_recipe() -> Path:
    return Path(str(resources.files("shrink").joinpath("recipes/demo.yaml")))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shrink")
    except PackageNotFoundError:  # running from a source tree that was not installed
        from shrink import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shrink", description="Make trained PyTorch models smaller and faster.")
    parser.add_argument("--version", action="version", version=f"shrink {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a recipe and write model, report.json and report.html")
    p_run.add_argument("recipe")
    p_run.add_argument("--out", required=True, help="output directory")
    p_run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints")
    p_run.add_argument("--quiet", action="store_true", help="no progress bars and no stage lines")
    p_run.add_argument("--keep-checkpoints", action="store_true", help="keep OUT/checkpoints after a successful run")
    p_run.add_argument("--ray-address", help="run search trials on this Ray cluster (default: a local Ray instance)")
    p_demo = sub.add_parser("demo", help="run the bundled demo recipe on the digits CNN")
    p_demo.add_argument("--out", default="out/demo")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bars and no stage lines")
    p_demo.add_argument("--keep-checkpoints", action="store_true", help="keep OUT/checkpoints after the run")
    p_stages = sub.add_parser("stages", help="list the stage types recipes accept, or one type's fields")
    p_stages.add_argument("type", nargs="?", help="a stage type: show every field with its type, default and doc")
    p_presets = sub.add_parser("presets", help="list the shipped presets, or one preset's stages")
    p_presets.add_argument("name", nargs="?", help="a preset: show its stages as a recipe lists them")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = _parser().parse_args(argv)

    from shrink.errors import ShrinkError

    try:
        if args.command == "stages":
            from shrink.console import table_width
            from shrink.stage_doc import describe, summary

            print(describe(args.type) if args.type else summary(table_width()))
            return 0
        if args.command == "presets":
            from shrink.presets import describe as describe_preset

            print(describe_preset(args.name))
            return 0
        from shrink.console import StageLines, is_terminal, table_width
        from shrink.recipe import run

        if getattr(args, "ray_address", None):
            os.environ["RAY_ADDRESS"] = args.ray_address
        recipe = _demo_recipe() if args.command == "demo" else Path(args.recipe)
        result = run(
            recipe,
            args.out,
            resume=getattr(args, "resume", False),
            progress=not args.quiet and is_terminal(sys.stderr),  # bars only on a terminal; plain lines elsewhere
            keep_checkpoints=args.keep_checkpoints,
            on_stage=None if args.quiet else StageLines(sys.stderr),
        )
        from shrink.train.distributed import is_main

        if not is_main():  # under torchrun only rank 0 evaluates, writes and prints
            return 0
        print(result.report.render(width=table_width()))
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
