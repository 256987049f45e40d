"""Run commands inside named network namespaces without `ip netns exec`.

Under TCG every exec is expensive, and `ip netns exec` costs an extra exec plus a
mount-namespace /sys remount. Instead a short-lived thread joins the namespace
with setns(2) (which only affects that thread) and starts the command from there:
the child inherits the thread's network namespace.
"""
import ctypes
import os
import subprocess
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_ns(ns, fn):
    """Call fn() on a thread that has joined network namespace `ns` (None = ours)."""
    if ns is None:
        return fn()
    box = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box.get("v")


def run(ns, cmd, input=None, timeout=120):
    return in_ns(ns, lambda: subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                            input=input, timeout=timeout))


def popen(ns, cmd, **kw):
    kw.setdefault("text", True)
    return in_ns(ns, lambda: subprocess.Popen([str(c) for c in cmd], **kw))


def sysctl(ns, settings):
    """settings: {"net.ipv4.ip_forward": 1, ...} written through /proc/sys in `ns`."""
    def body():
        for k, v in settings.items():
            with open("/proc/sys/" + k.replace(".", "/"), "w") as f:
                f.write(f"{v}\n")
    in_ns(ns, body)


def start_thread(ns, fn):
    """Run fn() on a daemon thread inside namespace `ns`; returns the thread.
    Sockets fn creates belong to `ns`, whichever thread later uses them."""
    def body():
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({ns})")
        finally:
            os.close(fd)
        fn()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def proc_net(ns, name):
    """/proc/net/<name> as seen from namespace `ns` (no process started)."""
    def body():
        with open(f"/proc/thread-self/net/{name}") as f:
            return f.read()
    return in_ns(ns, body)
