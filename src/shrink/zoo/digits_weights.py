"""Train the shipped digits weights: ``python -m shrink.zoo.digits_weights [--check] [--only NAME]``.

Writes ``shrink/zoo/weights/NAME-KEY.safetensors`` for the digits teacher and pretrained student (seed 0) and
records their SHA-256 in ``weights/manifest.json``. With ``--check`` it trains them again into memory and reports
whether the bytes match the shipped files (training runs on one thread, so the thread count does not matter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

from shrink.zoo.digits import TRAINING, DigitsCNN, DigitsStudent, train_digits
from shrink.zoo.pretrained import train_to_bytes, weights_key

__all__ = ["train_shipped", "BUILDERS"]

BUILDERS: dict[str, type[nn.Module]] = {"digits_cnn": DigitsCNN, "digits_student": DigitsStudent}


def train_shipped(name: str, seed: int = 0) -> tuple[str, bytes]:
    """Train ``name`` exactly as ``digits_teacher()`` / ``digits_student(pretrained=True)`` would; (file name,
    safetensors bytes)."""
    settings = {**TRAINING[name], "seed": seed}
    torch.manual_seed(seed)
    model = BUILDERS[name]()
    key = weights_key(name, model, settings)

    def train(m: nn.Module) -> None:
        train_digits(m, epochs=settings["epochs"], seed=seed, lr=settings["lr"], progress=False)

    return f"{name}-{key}.safetensors", train_to_bytes(name, model, settings, train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shrink.zoo.digits_weights", description=__doc__)
    parser.add_argument("--check", action="store_true", help="retrain and compare with the shipped files")
    parser.add_argument("--only", choices=sorted(BUILDERS), help="one model only")
    args = parser.parse_args(argv)
    directory = Path(__file__).with_name("weights")
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    ok = True
    for name in [args.only] if args.only else sorted(BUILDERS):
        filename, data = train_shipped(name)
        digest = hashlib.sha256(data).hexdigest()
        if args.check:
            same = manifest.get(filename, {}).get("sha256") == digest
            ok &= same
            print(f"{filename}: {'reproduced' if same else 'DIFFERS from the shipped file'} ({digest[:12]})")
            continue
        directory.mkdir(exist_ok=True)
        (directory / filename).write_bytes(data)
        manifest = {k: v for k, v in manifest.items() if not k.startswith(f"{name}-")}
        manifest[filename] = {"sha256": digest, "bytes": len(data), "torch": torch.__version__.split("+")[0]}
        print(f"wrote {directory / filename} ({len(data)} bytes, sha256 {digest[:12]})")
    if not args.check:
        manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
