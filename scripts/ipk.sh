#!/usr/bin/env bash
# Builds one OpenWrt .ipk the way OpenWrt's scripts/ipkg-build does: a gzip-compressed tar
# holding ./debian-binary, ./data.tar.gz and ./control.tar.gz (opkg rejects the Debian-style ar
# archive). Reproducible: fixed mtimes (SOURCE_DATE_EPOCH, default the last commit's time),
# sorted names, owner 0:0, GNU tar format, gzip -n (zopfli --gzip for data.tar.gz when
# installed: same format, smaller).
#
# Usage: scripts/ipk.sh <mape binary> <openwrt-arch> [<output dir, default dist> [<package>]]
#   <package>: mape-rs (default), mape-rs-map, luci-proto-mape, luci-i18n-mape-ja
#   (scripts/pkgdef.sh). Only mape-rs uses the binary (give "-" for the others); the others
#   are Architecture "all" whatever <openwrt-arch> says.
# Env:   MAPE_RELEASE     OpenWrt package release, default 1 (Version: <cargo version>-r<release>)
#        MAPE_MAINTAINER  Maintainer field
#        MAPE_LMO         the compiled catalogue for luci-i18n-mape-ja (po2lmo po/ja/mape.po)
#        SOURCE_DATE_EPOCH
#
# Control: control, postinst/prerm (OpenWrt's standard wrappers from include/package-pack.mk
# that call default_postinst/default_prerm from /lib/functions.sh) and postinst-pkg/prerm-pkg
# (the package's own scripts, from packaging/), exactly what an SDK build of
# openwrt-package/mape-rs puts there.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/pkgdef.sh
. "$root/scripts/pkgdef.sh"
pkg_cli ipk.sh "$@"
name=$PKG_NAME arch=$PKG_ARCH outdir=$PKG_OUTDIR

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=$tmp/data
ctrl=$tmp/control
mkdir -p "$ctrl"

# --- data ---------------------------------------------------------------------------------
pkg_stage "$name" "$data" "$PKG_BIN" "${MAPE_LMO:-}"

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
field() { [ -z "$2" ] || echo "$1: $2"; }
{
	field Package "$name"
	field Version "$PKG_VERSION"
	field Depends "$PKG_DEPENDS"
	field Conflicts "$PKG_CONFLICTS"
	field Replaces "$PKG_REPLACES"
	field Provides "$PKG_PROVIDES"
	field SourceName mape-rs
	field License "$PKG_LICENSE"
	field LicenseFiles "${PKG_LICENSE_FILES[*]}"
	field Section "$PKG_SECTION"
	field Maintainer "$PKG_MAINTAINER"
	field Architecture "$arch"
	field Installed-Size "$installed_size"
	# As package-pack.mk: the long description, every line indented by one space.
	printf 'Description:'
	printf '%s\n' "$PKG_DESCRIPTION" | sed -e 's/^[[:space:]]*/ /'
} >"$ctrl/control"
# OpenWrt's standard wrappers (include/package-pack.mk); the package's own parts follow.
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
chmod 0644 "$ctrl/control"
chmod 0755 "$ctrl/postinst" "$ctrl/prerm"
for s in postinst prerm; do
	pkg_script "$name" "$s" >"$ctrl/$s-pkg"
	if [ -s "$ctrl/$s-pkg" ]; then chmod 0755 "$ctrl/$s-pkg"; else rm -f "$ctrl/$s-pkg"; fi
done
(cd "$ctrl" && "${TAR[@]}" -cf - .) | gzip -9n >"$tmp/control.tar.gz"

# --- outer archive ------------------------------------------------------------------------
echo "2.0" >"$tmp/debian-binary"
chmod 0644 "$tmp/debian-binary" "$tmp/data.tar.gz" "$tmp/control.tar.gz"
mkdir -p "$outdir"
out="$outdir/${name}_${PKG_VERSION}_${arch}.ipk"
(cd "$tmp" && "${TAR[@]}" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -9n >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
