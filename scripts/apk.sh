#!/usr/bin/env bash
# Builds one OpenWrt .apk (apk-tools v3 ADB format, unsigned) with the real `apk mkpkg`, the way
# OpenWrt's include/package-pack.mk does for 25.12 and later:
#   - the file tree of scripts/pkgdef.sh, plus /lib/apk/packages/<name>.list (every file and
#     symlink of the package, "/path" per line: OpenWrt's default_postinst/default_prerm read it
#     to run the package's uci-defaults and init scripts);
#   - the maintainer scripts mapped as package-pack.mk maps them:
#       post-install    OpenWrt's wrapper (IPKG_NO_SCRIPT, /lib/functions.sh, root=, pkgname=,
#                       add_group_and_user, default_postinst) + the package's postinst body
#       post-upgrade    "export PKG_UPGRADE=1" + the same
#       pre-deinstall   the wrapper (default_prerm) + the package's prerm body
#     (pre-install/pre-upgrade only for a preinst and post-deinstall only for a postrm: our
#     packages have neither);
#   - info: name, version, description (one line), arch (the OpenWrt architecture, "noarch"
#     for Architecture "all"), license, origin, url, maintainer, provides, depends.
# Reproducible: SOURCE_DATE_EPOCH (default the last commit's time) is every file's mtime, files
# are owned by root (fakeroot when not run as root), no xattrs.
#
# Usage: scripts/apk.sh <mape binary|-> <openwrt-arch> [<output dir, default dist> [<package>]]
#   (as scripts/ipk.sh; writes <outdir>/<package>-<version>.apk, OpenWrt's file name)
# Env:   MAPE_APK (apk-tools 3 binary; default `apk` on PATH), MAPE_RELEASE, MAPE_MAINTAINER,
#        MAPE_LMO, SOURCE_DATE_EPOCH
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/pkgdef.sh
. "$root/scripts/pkgdef.sh"
pkg_cli apk.sh "$@"
name=$PKG_NAME arch=$PKG_ARCH outdir=$PKG_OUTDIR
[ "$arch" = all ] && arch=noarch
APK=${MAPE_APK:-apk}
apk_v3 "$APK" || { echo "apk.sh: '$APK' is not apk-tools 3 (set MAPE_APK; scripts/dist.sh says how to get one)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=$tmp/data
sc=$tmp/scripts
mkdir -p "$sc"

# --- data ---------------------------------------------------------------------------------
pkg_stage "$name" "$data" "$PKG_BIN" "${MAPE_LMO:-}"
list=$tmp/$name.list
(cd "$data" && find . \( -type f -o -type l \) -printf '/%P\n' | sort) >"$list"
install -D -m 0644 "$list" "$data/lib/apk/packages/$name.list"
chmod 0755 "$data/lib" "$data/lib/apk" "$data/lib/apk/packages"

# --- scripts ------------------------------------------------------------------------------
body() { pkg_script "$name" "$1" | sed '/^[[:space:]]*#!/d'; }
{
	echo '#!/bin/sh'
	echo '[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0'
	echo '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0'
	echo '. ${IPKG_INSTROOT}/lib/functions.sh'
	echo 'export root="${IPKG_INSTROOT}"'
	echo "export pkgname=\"$name\""
	echo 'add_group_and_user'
	echo 'default_postinst'
	body postinst
} >"$sc/post-install"
{
	echo '#!/bin/sh'
	echo 'export PKG_UPGRADE=1'
	sed '/^[[:space:]]*#!/d' "$sc/post-install"
} >"$sc/post-upgrade"
{
	echo '#!/bin/sh'
	echo '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0'
	echo '. ${IPKG_INSTROOT}/lib/functions.sh'
	echo 'export root="${IPKG_INSTROOT}"'
	echo "export pkgname=\"$name\""
	echo 'default_prerm'
	body prerm
} >"$sc/pre-deinstall"

# --- package ------------------------------------------------------------------------------
join() { sed 's/,//g' <<<"$1" | tr -s ' '; } # opkg's "a, b" -> apk's "a b"
provides=""
for p in $(join "$PKG_PROVIDES"); do
	# package-pack.mk's FormatProvides: a provide owns the name (name=version), so apk keeps
	# no other package of that name installed next to this one.
	provides+="${provides:+ }$p=$PKG_VERSION"
done
info=(
	-I "name:$name"
	-I "version:$PKG_VERSION"
	-I "description:$(tr '\n' ' ' <<<"$PKG_DESCRIPTION" | tr -s ' ' | sed 's/ $//')"
	-I "arch:$arch"
	-I "license:$PKG_LICENSE"
	-I "origin:mape-rs"
	-I "maintainer:$PKG_MAINTAINER"
)
[ -n "$PKG_URL" ] && info+=(-I "url:$PKG_URL")
[ -n "$provides" ] && info+=(-I "provides:$provides")
[ -n "$PKG_DEPENDS" ] && info+=(-I "depends:$(join "$PKG_DEPENDS")")
mkdir -p "$outdir"
out="$outdir/$name-$PKG_VERSION.apk"
fake=()
if [ "$(id -u)" != 0 ]; then
	command -v fakeroot >/dev/null || { echo "apk.sh: not root and no fakeroot: files would not be owned by root" >&2; exit 1; }
	fake=(fakeroot)
fi
"${fake[@]}" "$APK" mkpkg --no-xattrs "${info[@]}" \
	--script "post-install:$sc/post-install" \
	--script "post-upgrade:$sc/post-upgrade" \
	--script "pre-deinstall:$sc/pre-deinstall" \
	--files "$data" --output "$out.tmp" >&2
mv "$out.tmp" "$out"
echo "$out"
