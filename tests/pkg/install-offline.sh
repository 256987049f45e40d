#!/usr/bin/env bash
# Installs packages with OpenWrt's real package managers (opkg-lede for .ipk, apk-tools 3 for
# .apk) into a root directory: an offline OpenWrt-like root for tests, or / of a test machine.
#
# Usage: tests/pkg/install-offline.sh [options] ipk|apk ROOT PACKAGE...
#   PACKAGE      a package file (.ipk / .apk), or a package name with --repo
# Options:
#   --scripts    run the maintainer scripts as the package manager runs them on a router:
#                opkg without -o when ROOT is / (with -o, opkg sets IPKG_INSTROOT and the
#                scripts do what they do in an image build); apk chroots into ROOT to run them
#                (ROOT needs /bin/sh then). When ROOT has no /lib/functions.sh (OpenWrt's,
#                which the wrappers source), installs the stand-in tests/pkg/functions.sh.
#                Without it: an offline install, no scripts run (as OpenWrt's image builder
#                installs: IPKG_NO_SCRIPT=1, apk --no-scripts).
#   --arch A     the OpenWrt architecture ROOT accepts (default x86_64; "all"/"noarch" always)
#   --repo URL   opkg: a feed (src/gz URL, its Packages.gz), apk: a repository index
#                (.../packages.adb); PACKAGE names are then looked up there
#   --no-standins  record no stand-ins for the OpenWrt base packages (see below)
# Env:  MAPE_OPKG, MAPE_APK: the package managers (default: the OpenWrt userland of
#       tests/openwrt/userland.sh; exit status 77 with one "SKIP:" line when it is unavailable)
#
# ROOT is not a whole OpenWrt system, so the base packages our packages depend on
# (kmod-ip6-tunnel kmod-nft-nat nftables ubus luci-base) are recorded as installed stand-ins:
# opkg: entries in ROOT/usr/lib/opkg/status; apk: one empty package "openwrt-base-standin"
# (built here with apk mkpkg) that provides them. Everything else is the package managers' own
# doing. The database is created on first use (opkg: ROOT/etc/opkg.conf, ROOT/usr/lib/opkg;
# apk: --initdb). Prints the package manager's output; exit status 0 when it installed
# everything, 1 when it refused (its message says why), 2 on bad usage.
set -uo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
ROOTDIR=$(cd "$HERE/../.." && pwd)

usage() { sed -n '5,27p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
scripts=0 arch=x86_64 repo="" standins=1
while [ $# -gt 0 ]; do
	case $1 in
	--scripts) scripts=1 ;;
	--arch) [ $# -ge 2 ] || usage; arch=$2; shift ;;
	--repo) [ $# -ge 2 ] || usage; repo=$2; shift ;;
	--no-standins) standins=0 ;;
	-h | --help) usage ;;
	-*) echo "install-offline.sh: unknown option '$1'" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
[ $# -ge 3 ] || usage
format=$1 root=$2
shift 2
case $format in ipk | apk) ;; *) echo "install-offline.sh: format must be ipk or apk, not '$format'" >&2; exit 2 ;; esac
case $arch in *[!A-Za-z0-9_.-]* | "") echo "install-offline.sh: bad --arch '$arch'" >&2; exit 2 ;; esac
mkdir -p "$root" || exit 1
root=$(cd "$root" && pwd)
for p in "$@"; do
	case $p in
	*.ipk | *.apk) [ -f "$p" ] || { echo "install-offline.sh: $p: no such file" >&2; exit 2; } ;;
	*) [ -n "$repo" ] || { echo "install-offline.sh: '$p' is not a package file (give --repo to install by name)" >&2; exit 2; } ;;
	esac
done
STANDINS=(kmod-ip6-tunnel kmod-nft-nat nftables ubus luci-base)

tool() { # <var> <name in the userland>
	local v=${!1:-}
	if [ -z "$v" ]; then
		local prefix rc
		prefix=$("$ROOTDIR/tests/openwrt/userland.sh")
		rc=$?
		[ $rc = 0 ] || exit $rc
		v=$prefix/bin/$2
	fi
	[ -x "$v" ] || { echo "install-offline.sh: $v is not executable" >&2; exit 1; }
	echo "$v"
}
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

if [ "$format" = ipk ]; then
	OPKG=$(tool MAPE_OPKG opkg) || exit $?
	mkdir -p "$root/etc" "$root/usr/lib/opkg/info" "$root/var/lock" "$root/tmp"
	conf=$root/etc/opkg.conf
	if [ ! -f "$conf" ]; then
		{
			echo "dest root /"
			echo "lists_dir ext /var/opkg-lists"
			echo "arch all 1"
			echo "arch noarch 1"
			echo "arch $arch 10"
		} >"$conf"
	fi
	if [ -n "$repo" ] && ! grep -qx "src/gz mape $repo" "$conf"; then
		sed -i '/^src\/gz mape /d' "$conf"
		echo "src/gz mape $repo" >>"$conf"
	fi
	status=$root/usr/lib/opkg/status
	touch "$status"
	if [ "$standins" = 1 ]; then
		for s in "${STANDINS[@]}"; do
			grep -qx "Package: $s" "$status" && continue
			printf 'Package: %s\nVersion: 0-standin\nStatus: install user installed\nArchitecture: all\nInstalled-Time: 0\n\n' "$s" >>"$status"
			: >"$root/usr/lib/opkg/info/$s.list"
			printf 'Package: %s\nVersion: 0-standin\nArchitecture: all\n' "$s" >"$root/usr/lib/opkg/info/$s.control"
		done
	fi
	args=()
	for p in "$@"; do case $p in *.ipk) args+=("$(abs "$p")") ;; *) args+=("$p") ;; esac; done
	opkg=("$OPKG" -f "$conf")
	if [ "$scripts" = 1 ] && [ "$root" = / ]; then
		if [ ! -s /lib/functions.sh ]; then
			echo "install-offline.sh: / has no /lib/functions.sh: installing the stand-in tests/pkg/functions.sh" >&2
			install -D -m 0644 "$HERE/functions.sh" /lib/functions.sh || exit 1
		fi
	else
		opkg+=(-o "$root")
	fi
	env=()
	[ "$scripts" = 1 ] || env=(IPKG_NO_SCRIPT=1)
	if [ -n "$repo" ]; then
		env "${env[@]}" "${opkg[@]}" update || exit 1
	fi
	out=$(env "${env[@]}" "${opkg[@]}" install "${args[@]}" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	# opkg-lede exits 0 after some refusals (a conflict, a file clash): its messages tell.
	if [ $rc != 0 ] || grep -qE '^(Collected errors:| \* )' <<<"$out"; then exit 1; fi
	exit 0
fi

# apk
APK=$(tool MAPE_APK apk) || exit $?
if [ "$scripts" = 1 ] && [ ! -s "$root/lib/functions.sh" ]; then
	# OpenWrt's wrappers exit at once without /lib/functions.sh: the package's own scripts
	# would never run. A stand-in with OpenWrt's three functions (tests/pkg/functions.sh).
	echo "install-offline.sh: $root has no /lib/functions.sh: installing the stand-in tests/pkg/functions.sh" >&2
	install -D -m 0644 "$HERE/functions.sh" "$root/lib/functions.sh" || exit 1
fi
apk=("$APK" --root "$root" --allow-untrusted --arch "$arch" --no-cache --no-logfile)
case $repo in http://* | https://*) ;; *) apk+=(--no-network) ;; esac
[ -d "$root/lib/apk/db" ] || apk+=(--initdb)
[ -n "$repo" ] && apk+=(--repository "$repo")
[ "$scripts" = 1 ] || apk+=(--no-scripts)
args=()
for p in "$@"; do case $p in *.apk) args+=("$(abs "$p")") ;; *) args+=("$p") ;; esac; done
if [ "$standins" = 1 ] && [ ! -f "$root/lib/apk/packages/openwrt-base-standin.list" ] &&
	! "$APK" --root "$root" info -e openwrt-base-standin >/dev/null 2>&1; then
	t=$(mktemp -d)
	trap 'rm -rf "$t"' EXIT
	mkdir -p "$t/files"
	provides=""
	for s in "${STANDINS[@]}"; do provides+="${provides:+ }$s=0"; done
	SOURCE_DATE_EPOCH=0 "$APK" mkpkg --no-xattrs -I name:openwrt-base-standin -I version:0-r0 -I arch:noarch \
		-I "description:stand-in for the OpenWrt base packages mape-rs depends on (tests only)" \
		-I "provides:$provides" -F "$t/files" -o "$t/openwrt-base-standin-0-r0.apk" >/dev/null || exit 1
	args=("$t/openwrt-base-standin-0-r0.apk" "${args[@]}")
fi
"${apk[@]}" add "${args[@]}" || exit 1
