#!/usr/bin/env python3
"""Installs our package with OpenWrt's real package manager into an offline root (an image
build's view: maintainer scripts do not run) and checks what it recorded and wrote.

  offline-install.py FORMAT PKG ROOT      FORMAT: ipk (opkg-lede) or apk (apk-tools 3)

Prints one "ok <check>" or "FAIL <check>: <why>" line per check; exit status 1 on a failure.
Env: OPENWRT_USERLAND (the prefix of tests/openwrt/userland.sh).
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALLER = os.path.join(HERE, "pkg-install.sh")
# path in the root -> must be executable
FILES = {"usr/sbin/mape": True, "lib/netifd/proto/mape.sh": True, "usr/share/mape-rs/fw4-include.sh": True,
         "etc/uci-defaults/90-mape-rs": False, "usr/libexec/rpcd/mape": True}


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fmt, pkg, root = sys.argv[1:]
    results = []

    def check(name, problems):
        problems = [p for p in problems if p]
        results.append(not problems)
        print(f"ok   {name}" if not problems else f"FAIL {name}: {'; '.join(problems)}", flush=True)

    shutil.rmtree(root, ignore_errors=True)
    deps = run(INSTALLER, "deps", fmt, pkg)
    want = deps.stdout.split()
    prep = run(INSTALLER, "prepare", fmt, root, pkg)
    inst = run(INSTALLER, "install", fmt, root, pkg)
    out = inst.stdout + inst.stderr
    check(f"offline {fmt} install: {os.path.basename(pkg)} into an OpenWrt root with the real "
          f"{'opkg' if fmt == 'ipk' else 'apk'} (dependencies {', '.join(want) or 'none'} recorded as installed)",
          [deps.returncode and f"reading the dependencies failed: {deps.stderr.strip()[:300]}",
           not want and "the package declares no dependencies",
           prep.returncode and f"preparing the root failed: {prep.stderr.strip()[:300]}",
           inst.returncode and f"install exited {inst.returncode}: {out.strip()[-500:]}",
           ("Collected errors" in out or "ERROR" in out) and f"the package manager reported errors: {out[-500:]}"])
    if fmt == "ipk":
        status = open(os.path.join(root, "usr/lib/opkg/status")).read() if os.path.exists(
            os.path.join(root, "usr/lib/opkg/status")) else ""
        entry = next((e for e in status.split("\n\n") if e.startswith("Package: mape-rs\n")), "")
        with tarfile.open(pkg) as outer:
            ctl = tarfile.open(fileobj=outer.extractfile("./control.tar.gz"))
            control = ctl.extractfile("./control").read().decode()
        dep_line = re.search(r"^Depends: (.*)$", control, re.M)
        version = re.search(r"^Version: (.*)$", control, re.M)
        listed = open(os.path.join(root, "usr/lib/opkg/info/mape-rs.list")).read().split() if os.path.exists(
            os.path.join(root, "usr/lib/opkg/info/mape-rs.list")) else []
        check("opkg status: mape-rs installed with the package's Version, Architecture and Depends; its file list "
              "names every file",
              [not entry and "no mape-rs entry in usr/lib/opkg/status",
               entry and "Status: install user installed" not in entry and f"status entry {entry!r}",
               entry and dep_line and f"Depends: {dep_line.group(1)}" not in entry
               and f"Depends not recorded as in the package ({dep_line.group(1)}): {entry!r}",
               entry and "Architecture: x86_64" not in entry and f"architecture: {entry!r}",
               entry and version and f"Version: {version.group(1)}" not in entry and f"version: {entry!r}",
               [f for f in FILES if "/" + f not in listed] and
               f"mape-rs.list lacks {[f for f in FILES if '/' + f not in listed]}"])
    else:
        info = run(os.path.join(os.environ.get("OPENWRT_USERLAND", ""), "bin/apk"), "--root", root, "info", "-e",
                   "mape-rs")
        check("apk database: mape-rs installed", [info.returncode and f"apk info -e mape-rs: {info.stderr.strip()}"])
    probs = []
    for f, exe in FILES.items():
        p = os.path.join(root, f)
        if not os.path.isfile(p):
            probs.append(f"/{f} missing")
        elif exe and not os.access(p, os.X_OK):
            probs.append(f"/{f} not executable")
    if os.path.isfile(os.path.join(root, "usr/sbin/mape")):
        with open(os.path.join(root, "usr/sbin/mape"), "rb") as f:
            head = f.read(20)
        if head[:4] != b"\x7fELF" or head[18] != 62:
            probs.append("/usr/sbin/mape is not an x86_64 ELF binary")
    check("the files are in place: the binary, the netifd handler (executable), the fw4 include, uci-defaults, "
          "the rpcd plugin (executable); offline, the postinst did not run (uci-defaults still there)", probs)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
