#!/usr/bin/env python3
"""Translation catalogue of the LuCI view (files/www/luci-static/resources/protocol/mape.js).

    scripts/i18n.py pot            rewrite po/templates/mape.pot from the view's _() strings
    scripts/i18n.py update         rewrite the .pot and bring every po/<lang>/mape.po in step
                                   (new strings get an empty msgstr, dropped ones are removed,
                                   existing translations are kept)
    scripts/i18n.py check          exit 1, one line per problem, when the .pot is stale or a
                                   po/<lang>/mape.po lacks a translation, has one for a string the
                                   view no longer has, or changes a placeholder (%d, %s, %x, %%)
                                   or an HTML tag of its msgid
    scripts/i18n.py strings        print the extracted strings, one JSON string per line

What counts as a string: LuCI's translation calls, `_('text')` and `_('text', 'context')` (and
`N_(n, 'singular', 'plural'[, 'context'])`), whose arguments are string literals, possibly
concatenated with `+`; calls inside comments and strings are not calls. Entries are sorted by
msgid (as LuCI's own i18n-scan.pl sorts them), so moving code does not change the catalogue.
Standard library only.
"""
import json
import os
import re
import sys

# MAPE_I18N_ROOT: another tree to work on (the tests use it for their negative controls).
ROOT = os.environ.get("MAPE_I18N_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["files/www/luci-static/resources/protocol/mape.js"]
POT = "po/templates/mape.pot"
DOMAIN = "mape"

# Tokens after which a '/' starts a regular expression rather than a division.
_REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^") | {"", "return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw"}


class ScanError(Exception):
    pass


def _string_literal(src, i):
    """Parses the JS string literal starting at src[i] (' or "); returns (value, end index)."""
    q = src[i]
    out = []
    i += 1
    while i < len(src):
        c = src[i]
        if c == q:
            return "".join(out), i + 1
        if c == "\n":
            raise ScanError("unterminated string")
        if c == "\\":
            i += 1
            e = src[i]
            simple = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
            if e in simple:
                out.append(simple[e])
            elif e == "u":
                if src[i + 1] == "{":
                    j = src.index("}", i)
                    out.append(chr(int(src[i + 2:j], 16)))
                    i = j
                else:
                    out.append(chr(int(src[i + 1:i + 5], 16)))
                    i += 4
            elif e == "x":
                out.append(chr(int(src[i + 1:i + 3], 16)))
                i += 2
            elif e == "\n":
                pass
            else:
                out.append(e)
            i += 1
            continue
        out.append(c)
        i += 1
    raise ScanError("unterminated string")


def _skip_ws(src, i):
    while i < len(src):
        if src[i].isspace():
            i += 1
        elif src.startswith("//", i):
            i = src.find("\n", i)
            i = len(src) if i < 0 else i
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = len(src) if j < 0 else j + 2
        else:
            break
    return i


def _concat_literal(src, i):
    """A string literal, or several joined by '+'; returns (value, end) or (None, i)."""
    i = _skip_ws(src, i)
    if i >= len(src) or src[i] not in "'\"":
        return None, i
    value, i = _string_literal(src, i)
    while True:
        j = _skip_ws(src, i)
        if j < len(src) and src[j] == "+":
            k = _skip_ws(src, j + 1)
            if k < len(src) and src[k] in "'\"":
                more, i = _string_literal(src, k)
                value += more
                continue
        return value, i


def scan(src, path):
    """Yields (msgid, msgctxt or None, msgid_plural or None, line) for every translation call."""
    i, n = 0, len(src)
    prev = ""  # the last significant token, to tell a regex literal from a division
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
            continue
        if src.startswith("//", i) or src.startswith("/*", i):
            i = _skip_ws(src, i)
            continue
        if c in "'\"":
            _, i = _string_literal(src, i)
            prev = "str"
            continue
        if c == "`":
            j = i + 1
            while j < n and src[j] != "`":
                j += 2 if src[j] == "\\" else 1
            i = j + 1
            prev = "str"
            continue
        if c == "/" and prev in _REGEX_AFTER:
            j, cls = i + 1, False
            while j < n and (cls or src[j] != "/"):
                if src[j] == "\\":
                    j += 1
                elif src[j] == "[":
                    cls = True
                elif src[j] == "]":
                    cls = False
                elif src[j] == "\n":
                    raise ScanError("%s:%d: unterminated regular expression" % (path, src.count("\n", 0, i) + 1))
                j += 1
            i = j + 1
            while i < n and src[i].isalpha():
                i += 1
            prev = "regex"
            continue
        m = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*").match(src, i)
        if m:
            word = m.group(0)
            b = i - 1
            while b >= 0 and src[b].isspace():
                b -= 1
            before = src[b] if b >= 0 else ""
            j = _skip_ws(src, m.end())
            if word in ("_", "N_") and before != "." and j < n and src[j] == "(":
                line = src.count("\n", 0, i) + 1
                args, k = [], j + 1
                if word == "N_":
                    # the count argument: anything up to the first top-level comma
                    depth = 0
                    while k < n and not (depth == 0 and src[k] == ","):
                        depth += src[k] in "([{"
                        depth -= src[k] in ")]}"
                        k += 1
                    k += 1
                while True:
                    v, k2 = _concat_literal(src, k)
                    if v is None:
                        break
                    args.append(v)
                    k = _skip_ws(src, k2)
                    if k < n and src[k] == ",":
                        k += 1
                        continue
                    break
                if args:
                    if word == "_":
                        yield args[0], (args[1] if len(args) > 1 else None), None, line
                    elif len(args) >= 2:
                        yield args[0], (args[2] if len(args) > 2 else None), args[1], line
            i = m.end()
            prev = word
            continue
        if c.isdigit():
            m = re.compile(r"[0-9.xXa-fA-FeE_n]+").match(src, i)
            i = m.end()
            prev = "num"
            continue
        prev = c
        i += 1


def extract():
    """{(msgctxt, msgid): {"plural": ..., "refs": [path, ...]}} over SOURCES."""
    entries = {}
    for rel in SOURCES:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            src = f.read()
        for msgid, ctxt, plural, _line in scan(src, rel):
            e = entries.setdefault((ctxt, msgid), {"plural": plural, "refs": []})
            if rel not in e["refs"]:
                e["refs"].append(rel)
    return entries


def _po_quote(s):
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"%s"' % s


def _po_field(key, s):
    return "%s %s\n" % (key, _po_quote(s))


def _sort_key(k):
    ctxt, msgid = k
    return (msgid, ctxt or "")


def render_pot(entries):
    return render_po("Content-Type: text/plain; charset=UTF-8\n", entries, [])


def parse_po(text, path="po"):
    """[(entry dict)]: keys msgctxt, msgid, msgid_plural, msgstr (str or {n: str}), comments."""
    entries, cur, last = [], None, None

    def unq(s, lineno):
        s = s.strip()
        if len(s) < 2 or s[0] != '"' or s[-1] != '"':
            raise ScanError("%s:%d: expected a quoted string" % (path, lineno))
        return json.loads(s)

    def flush():
        if cur is not None and "msgid" in cur:
            entries.append(cur)

    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            flush()
            cur, last = None, None
            continue
        if cur is None:
            cur = {"comments": []}
        if s.startswith("#"):
            cur["comments"].append(line)
            continue
        m = re.match(r'^(msgctxt|msgid_plural|msgid|msgstr)(\[(\d+)\])?\s+(".*")$', s)
        if m:
            key, idx = m.group(1), m.group(3)
            val = unq(m.group(4), lineno)
            if key == "msgstr" and idx is not None:
                cur.setdefault("msgstr", {})[int(idx)] = val
                last = ("msgstr", int(idx))
            else:
                cur[key] = val
                last = (key, None)
            continue
        if s.startswith('"') and last:
            key, idx = last
            if idx is None:
                cur[key] += unq(s, lineno)
            else:
                cur[key][idx] += unq(s, lineno)
            continue
        raise ScanError("%s:%d: cannot parse: %s" % (path, lineno, s))
    flush()
    return entries


def po_languages():
    d = os.path.join(ROOT, "po")
    return sorted(x for x in os.listdir(d) if x != "templates" and os.path.isfile(os.path.join(d, x, DOMAIN + ".po")))


def render_po(header, entries, old):
    """A catalogue for `entries` (extract()) with the header entry's msgstr `header`, keeping the
    translations of `old` (parse_po() entries): po/<lang>/mape.po, or with no `old` the .pot."""
    by_key = {(e.get("msgctxt"), e["msgid"]): e for e in old if e["msgid"] != ""}
    out = [_po_field("msgid", ""), 'msgstr ""\n']
    for line in header.split("\n"):
        if line:
            out.append(_po_quote(line + "\n") + "\n")
    for k in sorted(entries, key=_sort_key):
        ctxt, msgid = k
        e, o = entries[k], by_key.get(k, {})
        out.append("\n")
        out.append("#: %s\n" % " ".join(e["refs"]))
        if ctxt is not None:
            out.append(_po_field("msgctxt", ctxt))
        out.append(_po_field("msgid", msgid))
        if e["plural"] is not None:
            out.append(_po_field("msgid_plural", e["plural"]))
            strs = o.get("msgstr") if isinstance(o.get("msgstr"), dict) else {0: ""}
            for i in sorted(strs):
                out.append(_po_field("msgstr[%d]" % i, strs[i]))
        else:
            out.append(_po_field("msgstr", o.get("msgstr", "") if isinstance(o.get("msgstr", ""), str) else ""))
    return "".join(out)


PLACEHOLDER = re.compile(r"%(?:%|[-+ 0#]*[0-9]*(?:\.[0-9]+)?[hlLqjzt]*[sdifxXoucegEGqhHjtm])")
TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)")


def _shape(s):
    # LuCI's String.format() fills placeholders in order: their sequence must stay the same.
    return PLACEHOLDER.findall(s), sorted(t.lower() for t in TAG.findall(s))


def check():
    problems = []
    entries = extract()
    want = render_pot(entries)
    path = os.path.join(ROOT, POT)
    try:
        with open(path, encoding="utf-8") as f:
            have = f.read()
    except FileNotFoundError:
        have = None
    if have != want:
        problems.append("%s is stale: run scripts/i18n.py update" % POT)
    langs = po_languages()
    if not langs:
        problems.append("no po/<lang>/%s.po" % DOMAIN)
    for lang in langs:
        rel = "po/%s/%s.po" % (lang, DOMAIN)
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            po = parse_po(f.read(), rel)
        have_keys = {}
        for e in po:
            if e["msgid"] == "":
                continue
            k = (e.get("msgctxt"), e["msgid"])
            if k in have_keys:
                problems.append("%s: duplicate entry %s" % (rel, json.dumps(e["msgid"], ensure_ascii=False)))
            have_keys[k] = e
        for k in sorted(entries, key=_sort_key):
            e = have_keys.get(k)
            label = json.dumps(k[1], ensure_ascii=False)
            if e is None:
                problems.append("%s: no entry for %s" % (rel, label))
                continue
            strs = e.get("msgstr")
            strs = list(strs.values()) if isinstance(strs, dict) else [strs or ""]
            if any(s == "" for s in strs):
                problems.append("%s: no translation for %s" % (rel, label))
                continue
            if any(c.startswith("#,") and "fuzzy" in c for c in e["comments"]):
                problems.append("%s: fuzzy translation for %s" % (rel, label))
            for s in strs:
                if _shape(s) != _shape(k[1]):
                    problems.append("%s: placeholders or tags differ for %s: %s vs %s" % (
                        rel, label, _shape(k[1]), _shape(s)))
        for k in have_keys:
            if k not in entries:
                problems.append("%s: entry for a string the view does not have: %s" % (
                    rel, json.dumps(k[1], ensure_ascii=False)))
    return problems


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    try:
        if cmd == "strings":
            for (ctxt, msgid) in sorted(extract(), key=_sort_key):
                print(json.dumps(msgid if ctxt is None else [msgid, ctxt], ensure_ascii=False))
            return 0
        if cmd in ("pot", "update"):
            entries = extract()
            os.makedirs(os.path.dirname(os.path.join(ROOT, POT)), exist_ok=True)
            with open(os.path.join(ROOT, POT), "w", encoding="utf-8") as f:
                f.write(render_pot(entries))
            print("wrote %s (%d strings)" % (POT, len(entries)))
            if cmd == "update":
                for lang in po_languages():
                    rel = "po/%s/%s.po" % (lang, DOMAIN)
                    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                        old = parse_po(f.read(), rel)
                    head = next((e for e in old if e["msgid"] == ""), {"msgstr": ""})
                    text = render_po(head["msgstr"], entries, old)
                    with open(os.path.join(ROOT, rel), "w", encoding="utf-8") as f:
                        f.write(text)
                    missing = sum(1 for e in parse_po(text, rel) if e["msgid"] and not e.get("msgstr"))
                    print("wrote %s (%d untranslated)" % (rel, missing))
            return 0
        if cmd == "check":
            problems = check()
            for p in problems:
                print("i18n: %s" % p)
            if problems:
                return 1
            print("i18n: %d strings, every one translated in %s" % (
                len(extract()), ", ".join("po/%s/%s.po" % (lang, DOMAIN) for lang in po_languages())))
            return 0
    except ScanError as e:
        print("i18n: %s" % e, file=sys.stderr)
        return 1
    print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
