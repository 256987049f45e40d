#!/usr/bin/env python3
"""Checks one .apk against its .ipk twin, reading the .apk with the real `apk adbdump`.

    apkmeta.py --apk-tool APK --apk FILE.apk --ipk-data DIR --ipk-control DIR
               --name N --version V --arch A [--depends "a b"] [--provides "p=v"] --license L

DIR (--ipk-data) is the unpacked data.tar.gz of the same package's .ipk, --ipk-control its
unpacked control.tar.gz. Checked (one `ok`/`FAIL` line each; exit status 1 on a failure):
  - info: name, version, arch, license, origin, depends, provides, no install_if/replaces;
  - files: exactly the .ipk's files plus /lib/apk/packages/<name>.list, same modes, owner
    root:root, same sizes and SHA-256 (adbdump prints each file's hash), no xattrs;
  - /lib/apk/packages/<name>.list: every file and symlink of the .ipk, "/path" per line, sorted
    (OpenWrt's default_postinst reads it to run the package's uci-defaults);
  - scripts: exactly post-install, post-upgrade and pre-deinstall, each as OpenWrt's
    include/package-pack.mk writes them around the package's own postinst-pkg / prerm-pkg.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

failures = 0


def ok(msg):
    print("ok   %s" % msg)


def bad(msg):
    global failures
    failures += 1
    print("FAIL %s" % msg)


def check(cond, msg, why=""):
    if cond:
        ok(msg)
    else:
        bad(msg + (": " + why if why else ""))


def tree(root):
    """{"/path": (mode, size, sha256)} of the regular files (and symlinks) under root."""
    out = {}
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            rel = "/" + os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
                continue
            with open(p, "rb") as fh:
                h = hashlib.sha256(fh.read()).hexdigest()
            out[rel] = (st.st_mode & 0o7777, st.st_size, h)
    return out


def strip_shebang(text):
    return "".join(line for line in text.splitlines(True) if not line.lstrip().startswith("#!"))


def expected_scripts(name, control_dir):
    """package-pack.mk's apk scripts for a package whose .ipk has control_dir's -pkg files."""
    def body(kind):
        p = os.path.join(control_dir, kind + "-pkg")
        if not os.path.exists(p):
            return ""
        with open(p, encoding="utf-8") as f:
            return strip_shebang(f.read())

    post_install = (
        "#!/bin/sh\n"
        '[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0\n'
        "[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n"
        ". ${IPKG_INSTROOT}/lib/functions.sh\n"
        'export root="${IPKG_INSTROOT}"\n'
        'export pkgname="%s"\n'
        "add_group_and_user\n"
        "default_postinst\n" % name
    ) + body("postinst")
    post_upgrade = "#!/bin/sh\nexport PKG_UPGRADE=1\n" + strip_shebang(post_install)
    pre_deinstall = (
        "#!/bin/sh\n"
        "[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0\n"
        ". ${IPKG_INSTROOT}/lib/functions.sh\n"
        'export root="${IPKG_INSTROOT}"\n'
        'export pkgname="%s"\n'
        "default_prerm\n" % name
    ) + body("prerm")
    return {"post-install": post_install, "post-upgrade": post_upgrade, "pre-deinstall": pre_deinstall}


def main():
    ap = argparse.ArgumentParser()
    for a in ("apk-tool", "apk", "ipk-data", "ipk-control", "name", "version", "arch", "license"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--depends", default="")
    ap.add_argument("--provides", default="")
    a = ap.parse_args()
    tag = "%s %s.apk" % (a.arch, a.name)

    r = subprocess.run([a.apk_tool, "adbdump", "--format", "json", a.apk], capture_output=True, text=True)
    if r.returncode != 0:
        bad("%s: apk adbdump: %s" % (tag, r.stderr.strip()))
        return 1
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        bad("%s: adbdump --format json is not JSON: %s" % (tag, e))
        return 1
    ok("%s: apk adbdump reads it" % tag)

    info = doc.get("info", {})
    want = {"name": a.name, "version": a.version, "arch": a.arch, "license": a.license, "origin": "mape-rs"}
    why = ["%s=%r" % (k, info.get(k)) for k, v in want.items() if info.get(k) != v]
    check(not why, "%s: info name/version/arch/license/origin" % tag, " ".join(why))
    # apk keeps dependency lists sorted
    check(sorted(info.get("depends", [])) == sorted(a.depends.split()), "%s: depends %s" % (tag, a.depends.split()),
          "got %s" % info.get("depends"))
    check(sorted(info.get("provides", [])) == sorted(a.provides.split()), "%s: provides %s" % (tag, a.provides.split()),
          "got %s" % info.get("provides"))
    check(not info.get("install-if") and not info.get("replaces"), "%s: no install-if, no replaces" % tag)
    check(bool(info.get("description")) and "\n" not in info["description"].strip(),
          "%s: one-line description" % tag)

    # files
    got = {}
    acl_bad = []
    for d in doc.get("paths", []):
        dname = d.get("name", "")
        acl = d.get("acl", {})
        if acl.get("user") != "root" or acl.get("group") != "root" or acl.get("xattrs"):
            acl_bad.append("/" + dname)
        if acl.get("mode") != 0o755:
            acl_bad.append("/%s mode %o" % (dname, acl.get("mode", 0)))
        for f in d.get("files", []):
            p = "/" + (dname + "/" if dname else "") + f["name"]
            facl = f.get("acl", {})
            if facl.get("user") != "root" or facl.get("group") != "root" or facl.get("xattrs"):
                acl_bad.append(p)
            got[p] = (facl.get("mode"), f.get("size"), f.get("hash"))
    check(not acl_bad, "%s: every directory 0755 and every entry root:root, no xattrs" % tag, " ".join(acl_bad))

    ipk = tree(a.ipk_data)
    listpath = "/lib/apk/packages/%s.list" % a.name
    want_files = set(ipk) | {listpath}
    check(set(got) == want_files, "%s: files = the .ipk's files + %s (%d)" % (tag, listpath, len(want_files)),
          "missing %s, extra %s" % (sorted(want_files - set(got)), sorted(set(got) - want_files)))
    diff = [p for p in ipk if p in got and ipk[p] != got[p]]
    check(not diff, "%s: same modes, sizes and SHA-256 as the .ipk" % tag,
          "; ".join("%s apk %s ipk %s" % (p, got[p], ipk[p]) for p in diff))
    want_list = "".join(p + "\n" for p in sorted(ipk)).encode()
    lst = got.get(listpath)
    check(lst is not None and lst[1] == len(want_list) and lst[2] == hashlib.sha256(want_list).hexdigest()
          and lst[0] == 0o644,
          "%s: %s lists every file of the package" % (tag, listpath))

    # scripts
    scripts = doc.get("scripts", {})
    want_s = expected_scripts(a.name, a.ipk_control)
    check(sorted(scripts) == sorted(want_s), "%s: scripts are %s" % (tag, ", ".join(sorted(want_s))),
          "got %s" % sorted(scripts))
    for k, v in want_s.items():
        got_s = scripts.get(k)
        # adbdump's JSON carries the script as it is stored
        check(got_s == v, "%s: %s = package-pack.mk's wrapper + the package's own script" % (tag, k),
              "differs" if got_s is not None else "missing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
