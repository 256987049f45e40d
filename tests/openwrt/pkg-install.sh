#!/usr/bin/env bash
# Installs one of our packages with OpenWrt's real package manager (from the userland prefix of
# tests/openwrt/userland.sh), the way a router does.
#
#   pkg-install.sh prepare FORMAT ROOT PKG... make ROOT a minimal OpenWrt package root for the
#                                             PKGs: the manager's configuration (architectures)
#                                             and every dependency they declare recorded as
#                                             installed, but for the PKGs themselves
#   pkg-install.sh install FORMAT ROOT PKG... install the PKGs into ROOT in one transaction;
#                                             ROOT "/" is a live install (maintainer scripts
#                                             run), anything else an offline one (image-build
#                                             style: scripts do not run)
#   pkg-install.sh deps FORMAT PKG            print the dependencies PKG declares, one a line
#   pkg-install.sh name FORMAT PKG            print the package's name
#
# FORMAT: ipk (opkg-lede, OpenWrt 24.10) or apk (apk-tools 3, OpenWrt 25.12 and later).
# Env: OPENWRT_USERLAND (the prefix; default: tests/openwrt/userland.sh's), PKG_ARCH (x86_64).
# Pitfalls (../shared/tools/openwrt-userland/README.md): opkg-lede takes only a gzip'd tar as
# .ipk, needs every Depends recorded in usr/lib/opkg/status (forcing does not help), the
# architecture listed in opkg.conf and var/lock present.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "pkg-install: $*" >&2; exit 1; }
[ $# -ge 3 ] || die "usage: pkg-install.sh prepare|install FORMAT ROOT PKG... | deps|name FORMAT PKG"
verb=$1 fmt=$2
ARCH=${PKG_ARCH:-x86_64}
U=${OPENWRT_USERLAND:-}
if [ -z "$U" ]; then U=$("$HERE/userland.sh") || exit; fi
export LD_LIBRARY_PATH=$U/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# The dependencies a package declares (names only, versions dropped).
deps() {
	case $fmt in
	ipk)
		tar -xzOf "$1" ./control.tar.gz | tar -xzO ./control |
			sed -n 's/^Depends: *//p' | tr ',' '\n' | sed 's/^ *//; s/[ (].*//' | grep -v '^$' || true ;;
	apk)
		"$U/bin/apk" adbdump "$1" | awk '/^ *depends:/ { d = 1; next } d && /^ *- / { print $2; next } { d = 0 }' |
			sed 's/[<>=~].*//' ;;
	*) die "unknown package format $fmt (ipk or apk)" ;;
	esac
}

# The package's name.
name() {
	case $fmt in
	ipk) tar -xzOf "$1" ./control.tar.gz | tar -xzO ./control | sed -n 's/^Package: *//p' ;;
	apk) "$U/bin/apk" adbdump "$1" | awk '/^info:/ { i = 1; next } i && /^  name:/ { print $2; exit }' ;;
	*) die "unknown package format $fmt (ipk or apk)" ;;
	esac
}

# What the PKGs depend on, once each, but for the PKGs themselves (installed together).
all_deps() {
	local p own="" d
	for p in "$@"; do own="$own $(name "$p")"; done
	for p in "$@"; do deps "$p"; done | sort -u | while read -r d; do
		case " $own " in *" $d "*) ;; *) echo "$d" ;; esac
	done
}

prepare() { # prepare ROOT PKG...
	local root=$1 d
	shift
	mkdir -p "$root/var/lock" "$root/tmp" "$root/etc"
	case $fmt in
	ipk)
		mkdir -p "$root/usr/lib/opkg/info" "$root/usr/lib/opkg/lists"
		cat >"$root/etc/opkg.conf" <<-EOF
			dest root /
			dest ram /tmp
			lists_dir ext /usr/lib/opkg/lists
			option overlay_root /overlay
			arch all 1
			arch noarch 1
			arch $ARCH 10
		EOF
		: >>"$root/usr/lib/opkg/status"
		for d in $(all_deps "$@"); do
			grep -qx "Package: $d" "$root/usr/lib/opkg/status" && continue
			# An entry as opkg writes it for an installed package (an empty Depends: line would
			# crash opkg-lede, so there is none).
			printf 'Package: %s\nVersion: 1\nStatus: install user installed\nArchitecture: %s\nInstalled-Time: 0\n\n' \
				"$d" "$ARCH" >>"$root/usr/lib/opkg/status"
			: >"$root/usr/lib/opkg/info/$d.list" # its (here: no) files
		done ;;
	apk)
		# apk records what is installed in its own database: one local package that provides
		# every dependency stands for the base system.
		mkdir -p "$root/etc/apk"
		echo "$ARCH" >"$root/etc/apk/arch"
		local provides="" tmp
		for d in $(all_deps "$@"); do provides="$provides${provides:+ }$d=1"; done
		tmp=$(mktemp -d)
		"$U/bin/apk" mkpkg -I name:openwrt-base-for-tests -I version:1-r1 -I "arch:$ARCH" \
			${provides:+-I "provides:$provides"} -o "$tmp/base.apk" >/dev/null
		# (--force-non-repository: a root on tmpfs, as the scratch root in the test VM is, would
		# otherwise be refused as diskless)
		"$U/bin/apk" --root "$root" --initdb --allow-untrusted --arch "$ARCH" --no-network --force-non-repository \
			add "$tmp/base.apk" >/dev/null
		rm -rf "$tmp" ;;
	*) die "unknown package format $fmt (ipk or apk)" ;;
	esac
}

install_pkg() { # install ROOT PKG...
	local root=$1
	shift
	case $fmt in
	ipk)
		if [ "$root" = / ]; then
			"$U/bin/opkg" install "$@"
		else
			"$U/bin/opkg" -o "$root" -f "$root/etc/opkg.conf" install "$@"
		fi ;;
	apk)
		if [ "$root" = / ]; then
			"$U/bin/apk" add --allow-untrusted --no-network "$@"
		else
			"$U/bin/apk" --root "$root" --allow-untrusted --arch "$ARCH" --no-network --no-scripts add "$@"
		fi ;;
	*) die "unknown package format $fmt (ipk or apk)" ;;
	esac
}

case $verb in
deps) deps "$3" ;;
name) name "$3" ;;
prepare) [ $# -ge 4 ] || die "usage: pkg-install.sh prepare FORMAT ROOT PKG..."; shift 2; prepare "$@" ;;
install) [ $# -ge 4 ] || die "usage: pkg-install.sh install FORMAT ROOT PKG..."; shift 2; install_pkg "$@" ;;
*) die "unknown verb $verb (prepare, install, deps, name)" ;;
esac
