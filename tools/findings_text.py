"""Write the book's "What we found" box into the introduction, from the chapters' results files.

The chapters and the report compute their boxes when they run (``copkit.findings``); the
introduction (``book/intro.md``) runs no code, so this tool writes the book's box there, between
the lines ``<!-- findings:begin -->`` and ``<!-- findings:end -->`` (nothing else in the file is
touched): :func:`copkit.findings.findings_box` over every results file in ``book/results``,
decided over the whole book as the report decides them (:func:`copkit.results.book_results`: one
Holm family, the same verdicts), with links only to the section labels the executed chapters in
``book/`` hold. ``make book`` and
``make chapters`` run it after the chapters, beside ``tools/runtimes_text.py``; ``--check`` only
compares, and exits 1 when the box differs from the results files
(``tests/test_findings_text.py`` does that on every test run).

    python tools/findings_text.py            # rewrite the box
    python tools/findings_text.py --check    # exit 1 if the box is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from runtimes_text import report, rewrite_blocks  # noqa: E402

from copkit.findings import findings_box  # noqa: E402
from copkit.results import book_results, read_results, section_labels  # noqa: E402

#: the Markdown files that hold the book's box, relative to the repository
FILES = ("book/intro.md",)
BEGIN, END = "<!-- findings:begin -->", "<!-- findings:end -->"


def render(results_dir: Path, notebooks_dir: Path) -> str:
    """The book's box from the results files in ``results_dir``, decided over the whole book as
    the report decides them (:func:`copkit.results.book_results`), linking the sections that the
    executed notebooks in ``notebooks_dir`` define (a missing one is not linked)."""
    raw = read_results(results_dir)
    if not raw:
        return f"No results files yet in `{results_dir.name}/`: run the chapters (`make book`)."
    results, _ = book_results(raw)
    labels = set().union(*(section_labels(notebooks_dir / f"{ch}.ipynb") for ch in results))
    return findings_box(results, labels=labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="compare only; exit 1 if a file's box is stale")
    parser.add_argument("--results", default=str(ROOT / "book" / "results"),
                        help="where the chapters' results files are")
    parser.add_argument("--notebooks", default=str(ROOT / "book"),
                        help="where the executed chapters are (for their section labels)")
    args = parser.parse_args()
    block = render(Path(args.results).resolve(), Path(args.notebooks).resolve())
    stale = rewrite_blocks(ROOT, FILES, block, BEGIN, END, check=args.check)
    return report(stale, args.check, "the findings boxes", "book/results",
                  "python tools/findings_text.py")


if __name__ == "__main__":
    sys.exit(main())
