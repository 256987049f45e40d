#!/usr/bin/env python3
"""Keeps README.ja.md in step with README.md, section by section.

    scripts/readme-ja.py [--en README.md] [--ja README.ja.md] [--map docs/readme-ja-sections.txt]

The map file has one line per README.md section heading (## and ###): the English heading, a tab,
and the heading of the Japanese section that covers it (`#` comments and blank lines ignored).
Exit status 1, one line per problem, when README.md has a heading the map does not know, when a
mapped Japanese heading is not in README.ja.md, or when the map names an English heading that
README.md no longer has; 0 and a one-line summary otherwise; 2 on bad usage or a missing file.
README.ja.md may have sections of its own (troubleshooting).
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def headings(path):
    """The ## and ### headings of a Markdown file, outside fenced code blocks."""
    out, fence = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                fence = not fence
                continue
            m = None if fence else re.match(r"^(##|###)\s+(.*?)\s*#*\s*$", line)
            if m:
                out.append(m.group(2))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--en", default=os.path.join(ROOT, "README.md"))
    ap.add_argument("--ja", default=os.path.join(ROOT, "README.ja.md"))
    ap.add_argument("--map", default=os.path.join(ROOT, "docs", "readme-ja-sections.txt"))
    a = ap.parse_args()
    for p in (a.en, a.ja, a.map):
        if not os.path.isfile(p):
            print("readme-ja: %s: no such file" % p)
            return 2
    mapping = {}
    with open(a.map, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                print("readme-ja: %s:%d: expected '<English heading><TAB><Japanese heading>'" % (a.map, n))
                return 2
            en, ja = line.split("\t", 1)
            mapping[en.strip()] = ja.strip()
    en_h, ja_h = headings(a.en), set(headings(a.ja))
    problems = []
    for h in en_h:
        if h not in mapping:
            problems.append("README.md section %r has no Japanese section in %s" % (h, os.path.basename(a.map)))
        elif mapping[h] not in ja_h:
            problems.append("README.ja.md lacks the section %r (for README.md's %r)" % (mapping[h], h))
    for h in mapping:
        if h not in en_h:
            problems.append("%s names README.md section %r, which README.md no longer has" % (os.path.basename(a.map), h))
    for p in problems:
        print("readme-ja: %s" % p)
    if problems:
        return 1
    print("readme-ja: all %d sections of README.md have their Japanese section" % len(en_h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
