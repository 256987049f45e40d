#!/usr/bin/env bash
# Our shipped static binaries on Debian 12's own MIPS and ARM kernels (issue 15): boots each
# guest under QEMU system emulation with everything in an initramfs (no host files over 9p:
# the architecture differs) and runs the MAP-E bed (tests/arch/bed.sh) inside.
#
#   tests/arch/run.sh [--arch A]... [--break-psid A] [--bin A=PATH] [--serial] [-v]
#
#   guest   QEMU                                        Debian kernel          our binary
#   mipsel  qemu-system-mipsel -M malta -cpu 24Kc       linux-image-*-4kc-malta dist/bin/mipsel_24kc
#   armhf   qemu-system-arm -M virt -cpu cortex-a7      linux-image-*-armmp    dist/bin/arm_cortex-a7_neon-vfpv4
#   arm64   qemu-system-aarch64 -M virt -cpu cortex-a53 linux-image-*-arm64    dist/bin/aarch64_cortex-a53
#
# --arch A        only these guests (default: all three)
# --break-psid A  guest A configures the CE with a wrong PSID throughout: its port-set checks
#                 must FAIL (each normal run also has an in-guest negative control)
# --bin A=PATH    boot guest A with another binary (e.g. an older build) instead of dist/'s
# --serial        one guest after the other (default: all at once, which is faster on 2 cores)
# -v              print the whole console of each guest
# Binaries: dist/bin/<openwrt-arch>/mape as scripts/dist.sh leaves them (test.sh runs it
# first); missing or older than the sources, they are built with scripts/dist.sh for just
# those architectures. The guests' stand-in for ubusd and netifd, examples/fake_ubusd.rs, is
# built the same way (scripts/dist.sh --example fake_ubusd) into dist/examples/<openwrt-arch>/
# and rebuilt on the same rule. Guests: tests/arch/mkguest.sh (cached in ~/.cache/mape-rs/arch).
# Prints each guest's checks and `N passed, M failed` per guest, then the total the same way.
# Artifacts: tests/arch/out/<arch>/console.log.
set -uo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$SECONDS

ALL=(mipsel armhf arm64)
declare -A OWRT=([mipsel]=mipsel_24kc [armhf]=arm_cortex-a7_neon-vfpv4 [arm64]=aarch64_cortex-a53)
declare -A BIN=() BREAK=()
ARCHES=() SERIAL= VERBOSE=
usage() { sed -n '2,/^set -u/{/^#/s/^# \{0,1\}//p}' "$0"; }
known() { [ -n "${OWRT[$1]:-}" ] || { echo "run.sh: unknown guest '$1' (mipsel, armhf, arm64)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || { usage >&2; exit 2; }; known "$2"; ARCHES+=("$2"); shift ;;
	--break-psid) [ $# -ge 2 ] || { usage >&2; exit 2; }; known "$2"; BREAK[$2]=1; shift ;;
	--bin) [ $# -ge 2 ] && [[ $2 == *=* ]] || { usage >&2; exit 2; }
		known "${2%%=*}"; BIN[${2%%=*}]=$(realpath -e "${2#*=}") || exit 2; shift ;;
	--serial) SERIAL=1 ;;
	-v) VERBOSE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=("${ALL[@]}")

infra_fail() { echo "FAIL $1"; echo "0 passed, 1 failed"; exit 1; }
[ "$(id -u)" = 0 ] || infra_fail "arch guests: run as root (apt-get for QEMU)"

# ---- host packages ----------------------------------------------------------------------------
missing=()
want() { local pkg=$1; shift; "$@" >/dev/null 2>&1 || missing+=("$pkg"); }
want qemu-system-mips command -v qemu-system-mipsel
want qemu-system-arm command -v qemu-system-aarch64
want cpio command -v cpio
want kmod command -v depmod
want binutils command -v readelf
want debian-archive-keyring test -r /usr/share/keyrings/debian-archive-keyring.gpg
if [ ${#missing[@]} -gt 0 ]; then
	echo "# installing ${missing[*]}"
	{ flock /tmp/apt.lock apt-get update -q || true
		flock /tmp/apt.lock env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
		>"${TMPDIR:-/tmp}/mape-arch-apt.log" 2>&1 ||
		infra_fail "arch guests: apt-get install ${missing[*]} failed (see ${TMPDIR:-/tmp}/mape-arch-apt.log)"
fi

# ---- our binaries -----------------------------------------------------------------------------
# stale FILE: missing, or older than what it is built from
stale() {
	[ ! -x "$1" ] || [ -n "$(cd "$ROOT" && find src Cargo.toml Cargo.lock build.rs data "${@:2}" -newer "$1" -print -quit 2>/dev/null)" ]
}
dist() { # what [dist.sh arguments...]: scripts/dist.sh, its output in a log
	local what=$1 log=${TMPDIR:-/tmp}/mape-arch-dist.log
	shift
	echo "# building $what (scripts/dist.sh; log: $log)"
	(cd "$ROOT" && MAPE_DIST_TARGET_DIR=${MAPE_DIST_TARGET_DIR:-$HOME/.cache/mape-rs/dist-target} \
		nice scripts/dist.sh "$@") >"$log" 2>&1 ||
		infra_fail "arch guests: scripts/dist.sh $*: $(tail -3 "$log" | tr '\n' ' ')"
}
stale=() stale_tool=()
for a in "${ARCHES[@]}"; do
	[ -n "${BIN[$a]:-}" ] || ! stale "$ROOT/dist/bin/${OWRT[$a]}/mape" || stale+=("${OWRT[$a]}")
	! stale "$ROOT/dist/examples/${OWRT[$a]}/fake_ubusd" examples/fake_ubusd.rs || stale_tool+=("${OWRT[$a]}")
done
[ ${#stale[@]} -eq 0 ] || dist "${stale[*]}" "${stale[@]}"
[ ${#stale_tool[@]} -eq 0 ] || dist "fake_ubusd for ${stale_tool[*]}" --example fake_ubusd "${stale_tool[@]}"
for a in "${ARCHES[@]}"; do
	[ -n "${BIN[$a]:-}" ] || BIN[$a]=$ROOT/dist/bin/${OWRT[$a]}/mape
done

# ---- guests -----------------------------------------------------------------------------------
declare -A GUEST=()
for a in "${ARCHES[@]}"; do
	t=$SECONDS
	GUEST[$a]=$("$HERE/mkguest.sh" "$a" 2>"${TMPDIR:-/tmp}/mape-arch-mkguest-$a.log") ||
		infra_fail "arch guests: mkguest.sh $a: $(tail -3 "${TMPDIR:-/tmp}/mape-arch-mkguest-$a.log" | tr '\n' ' ')"
	[ $((SECONDS - t)) -lt 5 ] || echo "# $a guest prepared in $((SECONDS - t)) s ($(sed -n 's/^kernel //p' "${GUEST[$a]}/manifest"))"
done

qemu_cmd() { # arch kernel initrd -> the QEMU argv, one word a line
	local common=(-m 256 -smp 1 -nodefaults -no-user-config -display none -no-reboot -serial stdio
		-kernel "$2" -initrd "$3")
	local append="panic=-1 quiet loglevel=3"
	case $1 in
	mipsel) printf '%s\n' qemu-system-mipsel -M malta -cpu 24Kc "${common[@]}" -append "console=ttyS0 $append" ;;
	armhf) printf '%s\n' qemu-system-arm -M virt,highmem=off -cpu cortex-a7 "${common[@]}" -append "console=ttyAMA0 $append" ;;
	arm64) printf '%s\n' qemu-system-aarch64 -M virt -cpu cortex-a53 "${common[@]}" -append "console=ttyAMA0 $append" ;;
	esac
}

run_guest() { # arch: boots it, writes out/<arch>/{console.log,rc,secs}
	local a=$1 o=$HERE/out/$1 t=$SECONDS
	rm -rf "$o" && mkdir -p "$o/overlay/arch" "$o/overlay/usr/sbin"
	install -m 0755 "$HERE/bed.sh" "$HERE/standin.sh" "$o/overlay/arch/"
	install -m 0755 "$ROOT/dist/examples/${OWRT[$a]}/fake_ubusd" "$o/overlay/usr/sbin/fake_ubusd"
	install -m 0755 "${BIN[$a]}" "$o/overlay/usr/sbin/mape"
	{ echo "BREAK_PSID=${BREAK[$a]:-0}"; } >"$o/overlay/arch/env"
	(cd "$o/overlay" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$o/overlay.cpio.gz"
	# The kernel unpacks concatenated archives: the cached base, then this run's files.
	cat "${GUEST[$a]}/initramfs.cpio.gz" "$o/overlay.cpio.gz" >"$o/initrd.cpio.gz"
	mapfile -t q < <(qemu_cmd "$a" "${GUEST[$a]}/kernel" "$o/initrd.cpio.gz")
	timeout -k 5 "${MAPE_ARCH_TIMEOUT:-300}" "${q[@]}" </dev/null 2>&1 | sed -u 's/\r$//' >"$o/console.log"
	echo "${PIPESTATUS[0]}" >"$o/qemu-rc"
	echo $((SECONDS - t)) >"$o/secs"
	rm -rf "$o/overlay" "$o/overlay.cpio.gz" "$o/initrd.cpio.gz"
}

report() { # arch: prints the guest's lines; adds to the totals
	local a=$1 o=$HERE/out/$1 p f rc k
	k=$(sed -n 's/^kernel //p' "${GUEST[$a]}/manifest")
	echo "== $a guest: Debian kernel $k, $(qemu_cmd "$a" K I | sed -n '1p;3p' | tr '\n' ' ')($(cat "$o/secs") s)"
	if [ -n "$VERBOSE" ]; then sed 's/^/   /' "$o/console.log"
	else grep -E '^(ok |FAIL |# |archtest: )' "$o/console.log" | grep -v '^[0-9]* passed' | sed 's/^/   /'; fi
	p=$(grep -c '^ok ' "$o/console.log")
	f=$(grep -c '^FAIL ' "$o/console.log")
	rc=$(sed -n 's/^ARCHTEST_EXIT=\([0-9]*\).*/\1/p' "$o/console.log" | tail -1)
	if [ -z "$rc" ]; then
		if [ "$(cat "$o/qemu-rc")" = 124 ]; then echo "   FAIL $a: the guest timed out (see ${o#"$ROOT"/}/console.log)"
		else echo "   FAIL $a: the guest stopped without an exit status (see ${o#"$ROOT"/}/console.log):"
			grep -v '^\s*$' "$o/console.log" | tail -5 | sed 's/^/   #   /'; fi
		f=$((f + 1))
	elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		echo "   FAIL $a: the bed exited $rc without a failed check"
		f=1
	fi
	[ "$p" -gt 0 ] || [ "$f" -gt 0 ] || { echo "   FAIL $a: no check ran"; f=1; }
	echo "$a: $p passed, $f failed"
	PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
}

echo "# booting ${ARCHES[*]} ($([ -n "$SERIAL" ] && echo "one after the other" || echo "all at once"))"
if [ -n "$SERIAL" ]; then
	for a in "${ARCHES[@]}"; do run_guest "$a"; done
else
	for a in "${ARCHES[@]}"; do run_guest "$a" & done
	wait
fi
PASSED=0 FAILED=0
for a in "${ARCHES[@]}"; do report "$a"; done
echo "# $((SECONDS - START)) s in all"
[ ${#BREAK[@]} -eq 0 ] || echo "# --break-psid ${!BREAK[*]}: failures are expected there; the port-set checks name the stray ports"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
