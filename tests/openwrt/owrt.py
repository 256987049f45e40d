"""OpenWrt routers made of the real userland, inside the test VM.

Each router is a network namespace plus a mount namespace whose root is an overlay: the guest's
(read-only, 9p) root, under a layer of OpenWrt's paths (BASE), under the router's own writable
layer, with fresh tmpfs on /tmp, /run and /var (so each router has its own ubus socket, uci save
dir, state files and locks), like OpenWrt's own overlay root. A router runs its own ubusd,
netifd and rpcd (the real ones, built by tests/openwrt/userland.sh) and is configured through
/etc/config like a real one.

BASE (Base.build, once per VM):
  usr/sbin/{netifd,ubusd,rpcd,odhcp6c,fw4}, usr/bin/{ubus,uci,jshn,jsonfilter,ucode,utpl,opkg}
  usr/bin/sh -> busybox        netifd's scripts need busybox sh (dash lacks `export -n`)
  usr/lib/netifd/{netifd-proto.sh,utils.sh,dhcpv6.script}, usr/lib/netifd/proto/dhcpv6.sh
  usr/lib/functions.sh, usr/lib/config/uci.sh   stand-ins (tests/openwrt/rootfs): base-files
                               is not among the sources
  etc/init.d/firewall          a stand-in too (procd's rc.common), for firewall4's real
                               etc/hotplug.d/iface/20-firewall, which the bed runs by hand: there
                               is no hotplug-call (under TCG a fw4 reload at every interface
                               event takes 3-7 s and queues up behind the bed's timings)
  usr/share/libubox/jshn.sh, usr/share/firewall4, usr/share/ucode/fw4.uc, etc/nftables.d
  etc/config/, etc/opkg.conf, usr/lib/opkg/status, etc/apk, lib/apk   from pkg-install.sh
                               prepare: our packages' dependencies recorded as installed, for
                               opkg and for apk
  PREFIX/libexec/rpcd, PREFIX/share/rpcd/acl.d, PREFIX/share/ucode   the userland has its
                               prefix baked in (rpcd's exec plugins and ACLs, ucode's modules):
                               links to OpenWrt's /usr/libexec/rpcd, /usr/share/rpcd/acl.d,
                               /usr/share/ucode
(/lib, /bin and /sbin are Debian's links into /usr.) Our own package is in no layer: each router
gets it from `opkg install`, which runs its postinst against the router's live netifd.

Commands run inside a router by setns(2) into its namespaces from the child process before exec
(no `nsenter` process: every exec is slow under TCG); the bed reads and writes the router's
files through /proc/<holder>/root.
"""
import ctypes
import json
import os
import shutil
import subprocess
import threading
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}
RESPAWN_DELAY = 5   # s: procd's default respawn timeout for a service that exited
T0 = time.time()    # the bed sets it to its own start, so that the logs share one clock

# Runs in the router's namespaces (`ip netns exec` gave it the network namespace and a mount
# namespace of its own): makes the router's root an overlay of BASE and the guest's root (the
# upper layer in D/u, so whatever the router writes is its own), pivots into it, prints "ready"
# and stays as the namespaces' anchor.
HOLDER = r'''
set -e
D=$1 B=$2
mount --make-rprivate /
mkdir -p "$D/u" "$D/w" "$D/root"
mount -t overlay owrt -o "lowerdir=$B:/,upperdir=$D/u,workdir=$D/w" "$D/root"
R=$D/root
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
for x in tmp run var; do mount -t tmpfs -o mode=755 "owrt-$x" "$R/$x"; done
chmod 1777 "$R/tmp"
mkdir -p "$R/run/ubus" "$R/run/lock" "$R/var/state" "$R/tmp/.uci" "$R/.oldroot" "$R/www"
ln -s /run "$R/var/run"
ln -s /run/lock "$R/var/lock"
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
cd /
echo ready
exec sleep 2147483647
'''


class OwrtError(Exception):
    pass


def _link(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(src, dst)


def _copy(src, dst, mode=None):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)
    if mode is not None:
        os.chmod(dst, mode)


class Base:
    """The shared OpenWrt layers (see the module documentation)."""

    def __init__(self, prefix, work):
        self.prefix = os.path.realpath(prefix)
        self.dir = os.path.join(work, "owrt-base")

    def build(self, pkg_install, pkgs):
        """pkgs: {format: [package files]}, the packages the routers will install (their
        dependencies are recorded as installed, for each format's package manager)."""
        p, b = self.prefix, self.dir
        shutil.rmtree(b, ignore_errors=True)
        u, e, x = os.path.join(b, "usr"), os.path.join(b, "etc"), b + p
        for t in ("netifd", "ubusd", "rpcd", "odhcp6c"):
            _link(f"{p}/sbin/{t}", f"{u}/sbin/{t}")
        for t in ("ubus", "uci", "jshn", "jsonfilter", "ucode", "utpl", "opkg"):
            _link(f"{p}/bin/{t}", f"{u}/bin/{t}")
        busybox = shutil.which("busybox") or "/usr/bin/busybox"
        _link(busybox, f"{u}/bin/sh")
        for s in ("netifd-proto.sh", "utils.sh"):
            _copy(f"{p}/share/netifd-scripts/{s}", f"{u}/lib/netifd/{s}", 0o644)
        odhcp = f"{p}/share/openwrt-files/package/network/ipv6/odhcp6c/files"
        _copy(f"{odhcp}/dhcpv6.sh", f"{u}/lib/netifd/proto/dhcpv6.sh", 0o755)
        _copy(f"{odhcp}/dhcpv6.script", f"{u}/lib/netifd/dhcpv6.script", 0o755)
        _copy(f"{HERE}/rootfs/lib/functions.sh", f"{u}/lib/functions.sh", 0o644)
        _copy(f"{HERE}/rootfs/lib/config/uci.sh", f"{u}/lib/config/uci.sh", 0o644)
        _link(f"{p}/share/libubox/jshn.sh", f"{u}/share/libubox/jshn.sh")
        fw = f"{p}/share/firewall4-root"
        shutil.copytree(f"{fw}/usr/share/firewall4", f"{u}/share/firewall4")
        _copy(f"{fw}/usr/share/ucode/fw4.uc", f"{u}/share/ucode/fw4.uc", 0o644)
        _copy(f"{fw}/sbin/fw4", f"{u}/sbin/fw4", 0o755)
        shutil.copytree(f"{fw}/etc/nftables.d", f"{e}/nftables.d")
        # firewall4's own hotplug script (it reloads fw4 when an interface with a zone, by name
        # or by its data, comes up); the bed runs it where a router's hotplug-call would
        _copy(f"{fw}/etc/hotplug.d/iface/20-firewall", f"{e}/hotplug.d/iface/20-firewall", 0o644)
        _copy(f"{HERE}/rootfs/etc/init.d/firewall", f"{e}/init.d/firewall", 0o755)
        os.makedirs(f"{e}/config", exist_ok=True)
        os.makedirs(f"{u}/libexec/rpcd", exist_ok=True)
        os.makedirs(f"{u}/share/rpcd/acl.d", exist_ok=True)
        _link("/usr/libexec/rpcd", f"{x}/libexec/rpcd")
        _link("/usr/share/rpcd/acl.d", f"{x}/share/rpcd/acl.d")
        _link("/usr/share/ucode", f"{x}/share/ucode")
        # opkg.conf and the status file with our package's dependencies (the installer's own
        # preparation, into a scratch root whose etc/ and usr/ become the layers)
        scratch = os.path.join(b, "pkgroot")
        for fmt, files in pkgs.items():
            r = subprocess.run([pkg_install, "prepare", fmt, scratch, *files], capture_output=True, text=True,
                               env=dict(os.environ, OPENWRT_USERLAND=p))
            if r.returncode:
                raise OwrtError(f"pkg-install.sh prepare {fmt}: {r.stderr.strip()[:500]}")
        # (etc/opkg.conf + usr/lib/opkg for opkg; etc/apk + lib/apk for apk: /lib is usr/lib here)
        for sub, dst in (("etc", "etc"), ("usr", "usr"), ("lib", "usr/lib")):
            src = os.path.join(scratch, sub)
            if os.path.isdir(src) and not os.path.islink(src):
                shutil.copytree(src, os.path.join(b, dst), dirs_exist_ok=True)
        shutil.rmtree(scratch)


class Router:
    """One OpenWrt router: namespaces, its ubusd/netifd/rpcd and its files."""

    def __init__(self, name, base, work, log=print, logdir=None):
        self.name = name
        self.base = base
        self.dir = os.path.join(work, f"owrt-{name}")
        self.logdir = logdir or self.dir
        self.log = log
        self.holder = None
        self.procs = {}
        self.logs = {}
        self.stopping = set()
        self.respawns = []      # [(time, key, exit status, last line of its log)]
        self._fds = None

    # ------------------------------------------------------------ namespaces
    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.name, "bash", "-c", HOLDER, "holder", self.dir,
                                        self.base.dir],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            err = self.holder.stderr.read() if self.holder.poll() is not None else ""
            raise OwrtError(f"{self.name}: namespace set-up failed: {line!r} {err.strip()[:500]}")
        self._fds = (os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC),
                     os.open(f"/proc/{self.holder.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))

    def _enter(self):
        net, mnt = self._fds

        def pre():
            if _setns(net, CLONE_NEWNET) != 0 or _setns(mnt, CLONE_NEWNS) != 0:
                os._exit(126)
            os.chdir("/")
        return pre

    def path(self, p):
        """A path inside the router, as the bed sees it. An absolute symbolic link on the way
        would be resolved in the bed's root: use /run, not /var/run."""
        return f"/proc/{self.holder.pid}/root{p}"

    def read(self, p, default=None):
        try:
            with open(self.path(p)) as f:
                return f.read()
        except OSError:
            return default

    def write(self, p, text, mode=0o644):
        full = self.path(p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, mode)

    def run(self, *cmd, input=None, timeout=60, check=True, env=None):
        cmd = [str(c) for c in cmd]
        t0 = time.time()
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=self._enter(), env=dict(ENV, **(env or {})))
        self.log(f"$ [{self.name}] {' '.join(cmd)[:400]} -> {p.returncode} ({time.time() - t0:.2f} s)"
                 + (f"\n{p.stdout.rstrip()[:3000]}" if p.stdout.strip() else "")
                 + (f"\nstderr: {p.stderr.rstrip()[:2000]}" if p.stderr.strip() else ""))
        if check and p.returncode:
            raise OwrtError(f"[{self.name}] {' '.join(cmd)[:200]} -> exit {p.returncode}: "
                            f"{(p.stderr or p.stdout).strip()[:500]}")
        return p

    def spawn(self, key, *cmd, env=None, respawn=False):
        """A daemon inside the router; its output goes to <logdir>/<router>-<key>.log. With
        respawn, it is started again RESPAWN_DELAY s after it exits unless stop() ended it
        (what procd does for OpenWrt's services)."""
        logf = open(os.path.join(self.logdir, f"{self.name}-{key}.log"), "a", buffering=1)
        logf.write(f"[{time.time() - T0:7.2f}] ==== start {' '.join(str(c) for c in cmd)}\n")
        p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, preexec_fn=self._enter(), env=dict(ENV, **(env or {})))

        def copy():   # each line with the bed's clock, as bed.log has it
            for line in iter(p.stdout.readline, b""):
                logf.write(f"[{time.time() - T0:7.2f}] {line.decode(errors='replace').rstrip()}\n")
            logf.close()
        threading.Thread(target=copy, daemon=True).start()
        self.procs[key] = p
        self.logs[key] = logf.name
        self.stopping.discard(key)
        self.log(f"& [{self.name}] {key}: pid {p.pid}: {' '.join(str(c) for c in cmd)}")
        if respawn:
            threading.Thread(target=self._supervise, args=(key, p, cmd, env), daemon=True).start()
        return p

    def _supervise(self, key, p, cmd, env):
        rc = p.wait()
        if key in self.stopping or self.holder is None or self.procs.get(key) is not p:
            return
        with open(self.logs[key]) as f:
            last = ([x for x in f.read().splitlines() if x.strip()] or [""])[-1]
        self.respawns.append((time.time(), key, rc, last))
        self.log(f"! [{self.name}] {key} (pid {p.pid}) exited {rc} ({last!r}): respawned in {RESPAWN_DELAY} s")
        time.sleep(RESPAWN_DELAY)
        if key not in self.stopping and self.holder is not None and self.procs.get(key) is p:
            self.spawn(key, *cmd, env=env, respawn=True)

    # ------------------------------------------------------------ daemons
    def start_ubusd(self):
        self.spawn("ubusd", "/usr/sbin/ubusd")
        wait_for(lambda: os.path.exists(self.path("/run/ubus/ubus.sock")), 20, f"{self.name}: ubusd socket")

    def start_netifd(self):
        self.spawn("netifd", "/usr/sbin/netifd", "-S", "-l", "3", respawn=True)
        wait_for(lambda: self.ubus_ok("network", "get_proto_handlers") is not None, 30,
                 f"{self.name}: netifd on ubus")

    def start_rpcd(self):
        self.spawn("rpcd", "/usr/sbin/rpcd", "-s", "/var/run/ubus/ubus.sock")
        wait_for(lambda: self.ubus_ok("session", "list") is not None, 20, f"{self.name}: rpcd on ubus")

    def stop(self, key, sig=15, timeout=20):
        self.stopping.add(key)
        p = self.procs.get(key)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def shutdown(self):
        self.stopping.update(self.procs)
        for key in list(self.procs)[::-1]:
            self.stop(key, timeout=5)
        for pid, _ in self.processes():
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        if self.holder and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
        for fd in self._fds or ():
            os.close(fd)
        self._fds = None

    # ------------------------------------------------------------ ubus, uci
    def ubus(self, obj, method, args=None, timeout=10, check=True):
        cmd = ["ubus", "-t", str(timeout), "call", obj, method]
        if args is not None:
            cmd.append(json.dumps(args))
        p = self.run(*cmd, timeout=timeout + 20, check=check)
        if p.returncode:
            return None
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def ubus_ok(self, obj, method, args=None, timeout=5):
        try:
            return self.ubus(obj, method, args, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None

    def object_id(self, obj):
        """The ubus id of an object (a restarted daemon registers it anew), None if absent."""
        try:
            p = self.run("ubus", "-t", "5", "list", "-v", obj, check=False, timeout=20)
        except subprocess.TimeoutExpired:
            return None
        first = p.stdout.split("\n", 1)[0].split()
        return first[1] if p.returncode == 0 and len(first) > 1 else None

    def status(self, iface):
        return self.ubus_ok(f"network.interface.{iface}", "status") or {}

    def uci_batch(self, lines, commit=("network",)):
        script = "\n".join(lines + [f"commit {c}" for c in commit]) + "\n"
        self.run("uci", "batch", input=script)

    # ------------------------------------------------------------ processes
    def processes(self):
        """[(pid, argv)] of every process in the router's mount namespace but the holder."""
        me = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == self.holder.pid:
                continue
            try:
                if os.readlink(f"/proc/{d}/ns/mnt") != me:
                    continue
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            except OSError:
                continue
            if argv:
                out.append((int(d), argv))
        return out

    def handler_procs(self, kind=None, iface=None):
        """Our handler's processes, `mape netifd [mape] ACTION IFACE ...` (kind: setup, teardown,
        watch; iface: only those of that interface)."""
        out = []
        for pid, argv in self.processes():
            if len(argv) >= 3 and argv[0].endswith("/mape") and argv[1] == "netifd":
                words = argv[3:5] if argv[2] == "mape" else argv[2:4]
                if (kind is None or words[:1] == [kind]) and (iface is None or words[1:2] == [iface]):
                    out.append((pid, argv))
        return out


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_for(cond, timeout, what, interval=0.1):
    """Polls cond() until it returns something true; its value, or OwrtError after timeout s."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise OwrtError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
