"""Build the reference docs into a folder (default out/docs): ``python docs/build.py [--out DIR]``.

* ``api/``: the API reference of the public modules, from their docstrings (pdoc);
* ``stages.html``: every recipe stage type with its fields (type, default, doc), from the config classes;
* ``guides/``: one short guide per family (``docs/guides/*.md``, whose snippets run in the tests);
* ``index.html`` linking them.

Any warning while documenting (a module that fails to import, a broken docstring reference) fails the build.
"""

from __future__ import annotations

import argparse
import html
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.markdown2 as markdown2

MODULES = ["shrink"]  # with every submodule
EXTRAS = ["fenced-code-blocks", "tables", "header-ids", "code-friendly"]
STYLE = "<style>body{font-family:system-ui,sans-serif;max-width:64em;margin:2em auto;padding:0 1em}"
STYLE += "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
STYLE += "pre{background:#f6f6f6;padding:.8em;overflow:auto}</style>"


def page(title: str, body_markdown: str) -> str:
    body = markdown2.markdown(body_markdown, extras=EXTRAS)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{STYLE}</head>'
        f"<body>{body}</body></html>"
    )


def build(out: Path) -> list[str]:
    """Write the docs to ``out``; returns the warnings raised while documenting."""
    from shrink.stage_doc import reference_markdown

    guides = sorted(Path(__file__).with_name("guides").glob("*.md"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, output_directory=out / "api")
    (out / "stages.html").write_text(page("Recipe stages", reference_markdown()), encoding="utf-8")
    (out / "guides").mkdir(parents=True, exist_ok=True)
    for guide in guides:
        text = guide.read_text(encoding="utf-8")
        (out / "guides" / f"{guide.stem}.html").write_text(page(guide.stem, text), encoding="utf-8")
    links = "\n".join(
        f"* [{g.read_text(encoding='utf-8').splitlines()[0].lstrip('# ')}](guides/{g.stem}.html)" for g in guides
    )
    index = "# shrink reference\n\n* [API reference](api/shrink.html)\n* [Recipe stages](stages.html)\n\n"
    index += f"## Guides\n\n{links}\n"
    (out / "index.html").write_text(page("shrink reference", index), encoding="utf-8")
    # pdoc's own findings (unimportable modules, bad references); deprecation noise of libraries it inspects is not
    found = [w for w in caught if "pdoc" in str(w.filename) and not issubclass(w.category, DeprecationWarning)]
    return list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/docs", type=Path)
    args = parser.parse_args(argv)
    problems = build(args.out)
    for p in problems:
        print(f"docs: {p}", file=sys.stderr)
    print(f"wrote {args.out / 'index.html'}" + (f" ({len(problems)} warnings)" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
