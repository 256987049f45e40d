#!/usr/bin/env python3
"""What each part of the router binary costs: scripts/size-report.sh runs this on the unstripped
copy scripts/dist.sh keeps (dist/symbols/<arch>/mape), the very build that is shipped.

Usage: size_report.py --nm <llvm-nm> --elf <unstripped> [--stripped <bin>] [--ipk <ipk>]
                      [--top N]
Prints Markdown: the sections of the shipped binary, a table by crate, one by mape module, and
the largest symbols. Sizes are symbol sizes from the symbol table (llvm-nm --print-size, names
demangled); "gzip" is zlib level 9 over that group's bytes alone (what the group would weigh in
the .ipk if it compressed as well on its own as inside the whole). Method and limits:
docs/sizes.md.
"""

import argparse
import re
import struct
import subprocess
import sys
import zlib
from collections import defaultdict

STD = {"std", "core", "alloc", "compiler_builtins", "panic_abort", "std_detect", "rustc_std_workspace_core"}
# Integer and soft-float helpers (compiler_builtins, C names): 64-bit division, f64 on a 24Kc.
BUILTIN = re.compile(
    r"^__(add|sub|mul|div|mod|udiv|umod|neg|cmp|ucmp|eq|ne|ge|gt|le|lt|unord|fix|fixuns|float"
    r"|floatun|floatuns|extend|trunc|pow|clz|ctz|ffs|popcount|bswap|ashl|ashr|lshr|mulo|udivmod"
    r"|divmod)[a-z]*[0-9]$"
)


def sections(path):
    """{name: (addr, offset, size, type)} of an ELF file (32 or 64 bit, either byte order)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        sys.exit(f"size_report: {path}: not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        fmt = end + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        fmt = end + "IIIIIIIIII"
    raw = [struct.unpack_from(fmt, data, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx]
    out = {}
    for sh in raw:
        name_off, sh_type, _flags, addr, offset, size = sh[:6]
        start = strtab[4] + name_off
        name = data[start:data.index(b"\0", start)].decode()
        if name:
            out[name] = (addr, offset, size, sh_type)
    return data, out


def split_top(s, sep):
    """Splits s at the first sep outside <>, [], ()."""
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c in "<[(":
            depth += 1
        elif c in ">])":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            return s[:i], s[i + len(sep):]
        i += 1
    return s, None


def first_path(ty):
    """The leading path of a type (`&mut a::b::C<T>` -> `a::b::C`); '' for a primitive, a slice,
    a tuple or an array."""
    ty = ty.strip()
    for p in ("&mut ", "&", "*const ", "*mut ", "dyn ", "unsafe ", "extern \"C\" "):
        if ty.startswith(p):
            return first_path(ty[len(p):])
    if ty[:1] in "[(":
        return ""
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*", ty)
    path = m.group(0) if m else ""
    return path if "::" in path else ""


def owner(name):
    """(crate, module path) of the code behind a demangled symbol: the crate that defines the
    function; for `<T as Trait>::f` and `<T>::f`, the crate of T (a derive or impl lives beside
    its type); methods of primitives, slices and tuples are core's."""
    if "::" not in name and not name.startswith("<"):
        if BUILTIN.match(name):
            return "compiler_builtins", ""
        return "(C: musl libc)", ""
    if name.startswith("<"):
        depth = 0
        for i, c in enumerate(name):
            if c == "<":
                depth += 1
            elif c == ">":
                depth -= 1
                if depth == 0:
                    break
        self_ty, _trait = split_top(name[1:i], " as ")
        path = first_path(self_ty) or "core"
    else:
        path = re.match(r"[^<]*", name).group(0)
    parts = [p for p in path.split("::") if p and not p.startswith("{")]
    return parts[0], "::".join(parts)


MAPE_MODULES = None  # filled from the symbols: every mape::a::b seen as a prefix of a path


def module_of(path, depth):
    """The mape module a path belongs to, `depth` levels deep, using the module names seen."""
    parts = path.split("::")
    best = "mape"
    for n in range(2, min(len(parts), depth + 1) + 1):
        cand = "::".join(parts[:n])
        if cand in MAPE_MODULES:
            best = cand
    return best


def main():
    global MAPE_MODULES
    ap = argparse.ArgumentParser()
    ap.add_argument("--nm", required=True)
    ap.add_argument("--elf", required=True)
    ap.add_argument("--stripped")
    ap.add_argument("--ipk")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()

    data, secs = sections(a.elf)
    out = subprocess.run(
        [a.nm, "--demangle", "--print-size", "--defined-only", "--radix=d", a.elf],
        check=True, capture_output=True, text=True,
    ).stdout
    # Section of each allocated, file-backed address range.
    filesecs = [(n, s) for n, s in secs.items() if s[0] and s[3] != 8]  # 8: SHT_NOBITS
    syms = []
    seen = set()
    for line in out.splitlines():
        f = line.split(" ", 3)
        if len(f) < 4:
            continue
        addr, size, kind, name = int(f[0]), int(f[1]), f[2], f[3]
        if size == 0 or kind in "bBUaA" or (addr, size) in seen:
            continue
        sec = next((n for n, s in filesecs if s[0] <= addr < s[0] + s[2]), None)
        if sec is None:
            continue
        seen.add((addr, size))
        s = secs[sec]
        off = s[1] + addr - s[0]
        syms.append((name, size, sec, data[off:off + size]))

    # Module names: every lower-case path prefix `mape::a`, `mape::a::b` that more path follows
    # (an item in it), as the symbols name them.
    MAPE_MODULES = set()
    for name, *_ in syms:
        for m in re.finditer(r"\bmape(::[A-Za-z_][A-Za-z0-9_]*)+", name):
            parts = m.group(0).split("::")
            for n in range(2, len(parts)):
                if not parts[n - 1][0].isupper():
                    MAPE_MODULES.add("::".join(parts[:n]))

    by_crate = defaultdict(lambda: [0, 0, 0, []])  # code, data, for-mape, bytes
    by_mod = {1: defaultdict(lambda: [0, 0, []]), 2: defaultdict(lambda: [0, 0, []])}  # own, generic
    code_secs = {".text"}
    for name, size, sec, blob in syms:
        crate, path = owner(name)
        row = by_crate[crate]
        row[0 if sec in code_secs else 1] += size
        row[3].append(blob)
        if crate == "mape":
            for d in (1, 2):
                r = by_mod[d][module_of(path, d)]
                r[0] += size
                r[2].append(blob)
        else:
            m = re.search(r"\bmape(::[a-z_][a-z0-9_]*)+", name)
            if m:
                row[2] += size
                for d in (1, 2):
                    r = by_mod[d][module_of(m.group(0) + "::x", d)]
                    r[1] += size
                    r[2].append(blob)

    def gz(blobs):
        return len(zlib.compress(b"".join(blobs), 9))

    def kib(n):
        return f"{n / 1024:.1f}"

    w = sys.stdout.write
    total_syms = sum(s[1] for s in syms)
    if a.stripped:
        sdata, ssecs = sections(a.stripped)
        text = [d[s[1]:s[1] + s[2]] for d, s in ((data, secs.get(".text")), (sdata, ssecs.get(".text"))) if s]
        if len(text) != 2 or text[0] != text[1]:
            sys.exit(f"size_report: {a.elf} and {a.stripped} are not the same build (.text differs): "
                     "run scripts/dist.sh again")
        fsize = len(open(a.stripped, "rb").read())
        w(f"Shipped binary ({a.stripped}): {fsize} bytes"
          + (f"; .ipk: {len(open(a.ipk, 'rb').read())} bytes" if a.ipk else "") + ".\n\n")
        w("| section | bytes | KiB |\n|---|---:|---:|\n")
        for n, s in sorted(ssecs.items(), key=lambda kv: -kv[1][2]):
            if s[3] != 8 and s[2] >= 256:
                w(f"| {n} | {s[2]} | {kib(s[2])} |\n")
        w("\n")
    attributed = defaultdict(int)
    for _, size, sec, _ in syms:
        attributed[sec] += size
    w("| section (unstripped) | bytes | in symbols | without a symbol (literals, padding) |\n")
    w("|---|---:|---:|---:|\n")
    for sec in sorted(attributed, key=lambda s: -secs[s][2]):
        size = secs[sec][2]
        w(f"| {sec} | {size} | {attributed[sec]} | {size - attributed[sec]} |\n")
    w("\n")

    w("By crate (symbol bytes; \"for mape types\" is the part of a crate's generic code "
      "instantiated for a type of mape, e.g. `Vec<mape::...>`, `drop_in_place::<mape::...>`):\n\n")
    w("| crate | code | data | total | % | KiB | of which for mape types | gzip -9 alone |\n")
    w("|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for crate, (code, dat, formape, blobs) in sorted(by_crate.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        t = code + dat
        w(f"| {crate} | {code} | {dat} | {t} | {100 * t / total_syms:.1f} | {kib(t)} | "
          f"{formape or ''} | {gz(blobs)} |\n")
    w(f"| **all symbols** | | | **{total_syms}** | 100 | {kib(total_syms)} | | "
      f"{gz([s[3] for s in syms])} |\n\n")

    for d in (1, 2):
        w(f"By mape module ({'top level' if d == 1 else 'two levels'}; own code and data, and "
          "other crates' generic code instantiated for the module's types):\n\n")
        w("| module | own | generic for it | total | KiB | gzip -9 alone |\n|---|---:|---:|---:|---:|---:|\n")
        rows = by_mod[d]
        for mod, (own, gen, blobs) in sorted(rows.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
            w(f"| {mod} | {own} | {gen} | {own + gen} | {kib(own + gen)} | {gz(blobs)} |\n")
        t_own = sum(r[0] for r in rows.values())
        t_gen = sum(r[1] for r in rows.values())
        w(f"| **mape** | **{t_own}** | **{t_gen}** | **{t_own + t_gen}** | {kib(t_own + t_gen)} | "
          f"{gz([b for r in rows.values() for b in r[2]])} |\n\n")

    w(f"The {a.top} largest symbols:\n\n| bytes | section | crate | symbol |\n|---:|---|---|---|\n")
    for name, size, sec, _ in sorted(syms, key=lambda s: -s[1])[:a.top]:
        short = name if len(name) <= 140 else name[:137] + "..."
        short = short.replace("|", "\\|")
        w(f"| {size} | {sec} | {owner(name)[0]} | `{short}` |\n")


if __name__ == "__main__":
    main()
