#!/usr/bin/env python3
"""Checks every relative link in README.md and docs/*.md: the file exists and, for a link with
a fragment into a Markdown page, the heading exists (GitHub's anchor rules). Exits 1 on any
broken link and lists them; `make test` runs it."""
import glob
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def slug(heading: str) -> str:
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def headings(path: str) -> set:
    found, in_code = set(), False
    with open(path, encoding="utf-8") as page:
        for line in page:
            if line.startswith("```"):
                in_code = not in_code
            match = re.match(r"^#{1,6} (.*)", line)
            if match and not in_code:
                found.add(slug(match.group(1)))
    return found


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    pages = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    broken = []
    for page in pages:
        with open(page, encoding="utf-8") as text:
            content = text.read()
        for match in re.finditer(r"\]\(([^)\s]*)\)", content):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            where = os.path.relpath(page, ROOT)
            if not os.path.exists(resolved):
                broken.append(f"{where}: {target} (no such file)")
            elif fragment and resolved.endswith(".md") and fragment not in headings(resolved):
                broken.append(f"{where}: {target} (no such heading)")
    for link in broken:
        print(f"broken link in {link}", file=sys.stderr)
    print(f"documentation links: {len(pages)} pages, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
