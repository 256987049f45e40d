#!/usr/bin/env bash
# Builds one OpenWrt .ipk the way OpenWrt's scripts/ipkg-build does: a gzip-compressed tar
# holding ./debian-binary, ./data.tar.gz and ./control.tar.gz (opkg rejects the Debian-style ar
# archive). Reproducible: fixed mtimes (SOURCE_DATE_EPOCH, default the last commit's time),
# sorted names, owner 0:0, GNU tar format, gzip -n (zopfli --gzip for data.tar.gz when
# installed: same format, smaller).
#
# Usage: scripts/ipk.sh <static mape binary> <openwrt-arch> [<output dir, default dist>]
# Env:   MAPE_RELEASE     OpenWrt package release, default 1 (Version: <cargo version>-r<release>)
#        MAPE_MAINTAINER  Maintainer field
#        SOURCE_DATE_EPOCH
#
# Data: /usr/sbin/mape, then everything under files/ (it mirrors the router's file system:
# /lib/netifd/proto/mape.sh, /www/luci-static/resources/protocol/mape.js, ...), as it is at
# build time. Control: control, postinst/prerm (OpenWrt's standard wrappers that call
# default_postinst/default_prerm from /lib/functions.sh) and postinst-pkg/prerm-pkg (the
# package's own scripts from packaging/), exactly the files an SDK build of
# openwrt-package/mape-rs puts there.
set -euo pipefail
export LC_ALL=C

usage() { echo "usage: $0 <mape binary> <openwrt-arch> [outdir]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
bin=$1
arch=$2
outdir=${3:-dist}
[ -f "$bin" ] || { echo "ipk.sh: $bin: no such file" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)

# Depends, and why (see openwrt-package/mape-rs/Makefile, which must say the same):
#   kmod-ip6-tunnel  the ip6tnl (ipip6) device netifd creates from the handler's tunnel object
#   kmod-nft-nat     the port-set SNAT rules (nft "snat to <v4>:<ports>")
#   nftables         the nft CLI the handler runs; on 23.05/24.10/25.x a virtual package provided
#                    by nftables-json (firewall4's choice) and nftables-nojson
#   ubus             the ubus CLI the handler runs (notify_proto, interface status)
# Not needed: libc (the binary is static), jsonfilter/resolveip (JSON is parsed by mape itself,
# no host names are resolved), jshn (netifd depends on it; prerm only uses it if present).
DEPENDS="kmod-ip6-tunnel, kmod-nft-nat, nftables, ubus"

cargo_field() { # first `key = "value"` of [package] in Cargo.toml
	awk -v k="$1" '
		/^\[/ { inpkg = ($0 == "[package]") ; next }
		inpkg && $1 == k && $2 == "=" { v = $0; sub(/^[^"]*"/, "", v); sub(/".*$/, "", v); print v; exit }
	' "$root/Cargo.toml"
}
version=$(cargo_field version)
license=$(cargo_field license)
description=$(cargo_field description)
[ -n "$version" ] || { echo "ipk.sh: no version in Cargo.toml" >&2; exit 1; }
pkgversion="$version-r${MAPE_RELEASE:-1}"
maintainer=${MAPE_MAINTAINER:-mape-rs developers}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=$tmp/data
ctrl=$tmp/control
mkdir -p "$data" "$ctrl"

# --- data ---------------------------------------------------------------------------------
if [ -d "$root/files" ]; then
	# Every file and symlink under files/, but no editor/VCS droppings.
	(cd "$root/files" && find . \( -type f -o -type l \) \
		! -name '.gitkeep' ! -name '.gitignore' ! -name '*~' ! -name '.*.sw?' ! -name '*.orig' ! -name '*.rej' -print0) |
		(cd "$root/files" && tar --null -T - -cf -) | tar -xf - -C "$data"
fi
install -D -m 0755 "$bin" "$data/usr/sbin/mape"
# Normalise modes: directories and executables 0755, everything else 0644.
find "$data" -type d -exec chmod 0755 {} +
find "$data" -type f -perm /111 -exec chmod 0755 {} +
find "$data" -type f ! -perm /111 -exec chmod 0644 {} +
# netifd only runs handlers it can execute.
if [ -d "$data/lib/netifd/proto" ]; then
	find "$data/lib/netifd/proto" -name '*.sh' -type f -exec chmod 0755 {} +
fi

TAR=(tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH")
(cd "$data" && "${TAR[@]}" -cf - .) >"$tmp/data.tar"
installed_size=$(stat -c %s "$tmp/data.tar")  # ipkg-build: zcat data.tar.gz | wc -c
# zopfli: a standard gzip stream, ~3% smaller than gzip -9, deterministic (no name, mtime 0).
if command -v zopfli >/dev/null; then
	zopfli --gzip -c "$tmp/data.tar" >"$tmp/data.tar.gz"
else
	gzip -9n <"$tmp/data.tar" >"$tmp/data.tar.gz"
fi

# --- control ------------------------------------------------------------------------------
{
	echo "Package: mape-rs"
	echo "Version: $pkgversion"
	echo "Depends: $DEPENDS"
	echo "License: $license"
	echo "Section: net"
	echo "Maintainer: $maintainer"
	echo "Architecture: $arch"
	echo "Installed-Size: $installed_size"
	echo "Description: $description"
	echo " proto mape for netifd: /lib/netifd/proto/mape.sh runs /usr/sbin/mape, which computes the"
	echo " MAP-E mapping (built-in rules for v6plus, OCN, BIGLOBE, NURO or an explicit rule), reports"
	echo " the ip6tnl tunnel to netifd and SNATs over all port sets with nftables."
} >"$ctrl/control"
# OpenWrt's standard wrappers (include/package-ipkg.mk); the package's own parts follow.
cat >"$ctrl/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
EOF
cat >"$ctrl/prerm" <<'EOF'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
EOF
cp "$root/packaging/postinst" "$ctrl/postinst-pkg"
cp "$root/packaging/prerm" "$ctrl/prerm-pkg"
chmod 0644 "$ctrl/control"
chmod 0755 "$ctrl/postinst" "$ctrl/prerm" "$ctrl/postinst-pkg" "$ctrl/prerm-pkg"
(cd "$ctrl" && "${TAR[@]}" -cf - .) | gzip -9n >"$tmp/control.tar.gz"

# --- outer archive ------------------------------------------------------------------------
echo "2.0" >"$tmp/debian-binary"
chmod 0644 "$tmp/debian-binary" "$tmp/data.tar.gz" "$tmp/control.tar.gz"
mkdir -p "$outdir"
out="$outdir/mape-rs_${pkgversion}_${arch}.ipk"
(cd "$tmp" && "${TAR[@]}" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -9n >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
