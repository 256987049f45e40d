#!/usr/bin/env bash
# Run one script as root inside a throw-away QEMU VM with Debian's stock 6.1
# kernel (prepared by mkinitramfs.sh) and the HOST root mounted read-only.
#
#   tests/vm/vmrun.sh [-c CACHE] [-k KVER] [-t SECS] [-m MB] [-s CPUS] [-l LOG]
#                     [-o OUTDIR] [-e NAME=VALUE]... [-q] SCRIPT [ARGS...]
#
# In the guest: same paths as on the host (read-only), fresh tmpfs on /tmp,
# /run and /var (so SCRIPT must not live there), the working directory kept,
# modprobe and module auto-loading served from CACHE/k/<ver>.
# -o OUTDIR  host folder shared read-write; the guest sees it as $MAPE_VM_OUT
# -e N=V     exported to SCRIPT;  -l LOG  also write the console to LOG
# -t SECS    kill the VM after SECS (default 600);  -q  less chatter
# The console (kernel + script output) goes to stdout. Exit status: the
# script's; 124 = timeout; 125 = the VM stopped without reporting one.
# Acceleration: KVM when /dev/kvm works and the CPU has vmx/svm, else TCG
# (override with MAPE_VM_ACCEL=kvm|tcg). Machine type pc (microvm hangs under TCG).
set -uo pipefail
SRC=$(cd "$(dirname "$0")" && pwd)
CACHE=${MAPE_VM_CACHE:-$(. "$SRC/paths.sh"; vm_cache_default "$SRC")} KVER= TMO=600 MEM=1024 SMP=1 LOG= OUTD= QUIET= ENVS=()
usage() { sed -n '2,/^set -u/{/^#/s/^# \{0,1\}//p}' "$0"; exit 2; }
while getopts c:k:t:m:s:l:o:e:qh o; do
	case $o in
	c) CACHE=$OPTARG ;; k) KVER=$OPTARG ;; t) TMO=$OPTARG ;; m) MEM=$OPTARG ;; s) SMP=$OPTARG ;;
	l) LOG=$OPTARG ;; o) OUTD=$OPTARG ;; e) ENVS+=("$OPTARG") ;; q) QUIET=1 ;; *) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
command -v qemu-system-x86_64 >/dev/null || { echo "vmrun: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 125; }

[ -n "$KVER" ] || KVER=$(ls "$CACHE/k" 2>/dev/null | sort -V | tail -1)
KD=$CACHE/k/$KVER
VMLINUX=$KD/boot/vmlinux-$KVER
INITRD=$CACHE/initramfs-$KVER.cpio.gz
if [ -z "$KVER" ] || [ ! -r "$VMLINUX" ] || [ ! -r "$INITRD" ]; then
	echo "vmrun: no prepared kernel in $CACHE (run tests/vm/mkinitramfs.sh first)" >&2
	exit 125
fi

SCRIPT=$(realpath -e "$1") || exit 125
shift
. "$SRC/paths.sh"
if vm_hidden "$SCRIPT"; then
	# The guest cannot see it (its /tmp, /run and /var are empty tmpfs): run a staged copy of
	# the script's folder instead, from there.
	STAGED=$(vm_stage_dir "$(dirname "$SCRIPT")") || { echo "vmrun: cannot stage $SCRIPT" >&2; exit 125; }
	SCRIPT=$STAGED/$(basename "$SCRIPT")
	vm_hidden "$PWD" && cd "$STAGED"
fi

if [ -n "$OUTD" ]; then
	mkdir -p "$OUTD" && X=$(realpath "$OUTD") && rm -f "$X/rc" || exit 125
else
	X=$(mktemp -d /tmp/mape-vm.XXXXXX) || exit 125
	trap 'rm -rf "$X"' EXIT
fi
chmod 755 "$X"
{
	printf 'MAPE_VM_KDIR=%q\n' "$KD"
	printf 'MAPE_VM_CWD=%q\n' "$PWD"
	printf 'MAPE_VM_QUIET=%q\n' "$QUIET"
} >"$X/config"
{
	echo 'export MAPE_VM_OUT=/run/mape-vm/xchg'
	for e in ${ENVS[@]+"${ENVS[@]}"}; do printf 'export %q\n' "$e"; done
	if [ -x "$SCRIPT" ]; then printf exec; else printf 'exec /bin/bash'; fi
	printf ' %q' "$SCRIPT" "$@"
	echo
} >"$X/cmd"

ACCEL=${MAPE_VM_ACCEL:-}
if [ -z "$ACCEL" ]; then
	if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in
kvm) ACC=(-accel kvm -cpu host) ;;
tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
*) echo "vmrun: MAPE_VM_ACCEL must be kvm or tcg" >&2; exit 2 ;;
esac
[ -n "$QUIET" ] || echo "vmrun: kernel $KVER, accel $ACCEL, $SMP cpu, ${MEM} MB" >&2

Q=(qemu-system-x86_64 -M pc "${ACC[@]}" -m "$MEM" -smp "$SMP"
	-nodefaults -no-user-config -display none -no-reboot -serial stdio
	-kernel "$VMLINUX" -initrd "$INITRD"
	-append "console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off ${MAPE_VM_APPEND:-}"
	-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
	-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
	-fsdev local,id=xchg,path="$X",security_model=none,multidevs=remap
	-device virtio-9p-pci,fsdev=xchg,mount_tag=xchg)

if [ -n "$LOG" ]; then
	timeout -k 5 "$TMO" "${Q[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$LOG"
else
	timeout -k 5 "$TMO" "${Q[@]}" </dev/null 2>&1 | sed -u 's/\r$//'
fi
QRC=${PIPESTATUS[0]}
if [ -s "$X/rc" ]; then
	exit "$(cat "$X/rc")"
elif [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
	echo "vmrun: timeout after ${TMO}s" >&2
	exit 124
else
	echo "vmrun: the VM stopped without an exit code (qemu exit $QRC)" >&2
	exit 125
fi
