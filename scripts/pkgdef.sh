# shellcheck shell=bash
# The packages built from this tree, described once. Sourced by scripts/ipk.sh and
# scripts/apk.sh (which build them), scripts/check-dist.sh and tests/pkg/ (which check them).
# openwrt-package/mape-rs/Makefile describes the same packages for an OpenWrt SDK;
# scripts/check-dist.sh compares the two.
#
#   mape-rs            /usr/sbin/mape, the netifd handler (proto mape), the fw4 include, the rpcd
#                      plugin, everything under files/ that is not LuCI's; one per architecture
#   mape-rs-map        /lib/netifd/proto/map.sh: proto map (DHCPv6 option 94) answered by mape;
#                      takes the place of OpenWrt's `map` package
#   luci-proto-mape    the LuCI protocol view (and its rpcd ACL), like LuCI's luci-proto-*
#   luci-i18n-mape-ja  the Japanese catalogue of the view, like LuCI's luci-i18n-*-ja
#
# Requires $root (the source tree). Uses no tool beyond coreutils.

PKG_NAMES=(mape-rs mape-rs-map luci-proto-mape luci-i18n-mape-ja)

# Files of files/ that belong to luci-proto-mape (shell patterns on ./-relative paths);
# everything else under files/ is mape-rs's.
PKG_LUCI_PATTERNS=('./www/*' './usr/share/rpcd/acl.d/luci-proto-mape.json')

# The compiled Japanese catalogue, where LuCI loads catalogues from: luci.mk installs
# po/<lang>/<name>.po as $(LUCI_LIBRARYDIR)/i18n/<name>.<lang>.lmo, LUCI_LIBRARYDIR being
# /usr/lib/lua/luci; the ucode dispatcher loads /usr/lib/lua/luci/i18n/*.<lang>.lmo.
PKG_LMO_PATH=/usr/lib/lua/luci/i18n/mape.ja.lmo
# luci.mk's LUCI_LANG.ja: the language name the i18n package registers in /etc/config/luci.
PKG_LANG_JA='日本語 (Japanese)'

# Where the licence texts go in mape-rs (see docs/packaging.md, "Licences").
PKG_LICENSE_DIR=/usr/share/licenses/mape-rs
PKG_LICENSE_FILES=(LICENSE-MIT LICENSE-APACHE)

pkg_known() { # <name>
	local n
	for n in "${PKG_NAMES[@]}"; do [ "$n" = "$1" ] && return 0; done
	return 1
}

# pkg_meta <name>: sets, in opkg's control syntax (lists are ", "-separated):
#   PKG_ARCHKIND  target (one package per OpenWrt architecture) or all
#   PKG_DEPENDS PKG_CONFLICTS PKG_REPLACES PKG_PROVIDES PKG_SECTION PKG_TITLE
#   PKG_DESCRIPTION (first line: the title; more lines: the long description)
pkg_meta() {
	PKG_CONFLICTS="" PKG_REPLACES="" PKG_PROVIDES=""
	case $1 in
	mape-rs)
		PKG_ARCHKIND=target
		# kmod-ip6-tunnel  the ip6tnl (ipip6) device netifd creates from the handler's tunnel
		# kmod-nft-nat     the port-set SNAT rules (nft "snat to <v4>:<ports>")
		# nftables         the nft CLI the handler runs; a virtual package provided by
		#                  nftables-json (firewall4's choice) and nftables-nojson
		# ubus             the ubus CLI the handler runs (notify_proto, interface status)
		# Not needed: libc (the binary is static), jsonfilter/resolveip (mape parses JSON
		# itself and resolves no host names), jshn (netifd depends on it).
		PKG_DEPENDS="kmod-ip6-tunnel, kmod-nft-nat, nftables, ubus"
		PKG_SECTION=net
		PKG_TITLE="MAP-E (RFC 7597) protocol handler for netifd (proto mape)"
		PKG_DESCRIPTION="proto mape for netifd: /lib/netifd/proto/mape.sh runs /usr/sbin/mape, which computes the
MAP-E mapping (built-in rules of the Japanese MAP-E ISPs, see mape rules --isps, or an explicit rule), reports
the ip6tnl tunnel to netifd and SNATs over all port sets with nftables."
		;;
	mape-rs-map)
		PKG_ARCHKIND=all
		PKG_DEPENDS="mape-rs"
		# OpenWrt's `map` package owns /lib/netifd/proto/map.sh too (docs/packaging.md,
		# tests/pkg/run.sh try both package managers against a package carrying that path).
		# opkg: Conflicts makes opkg refuse this package while `map` is installed, and `map`
		# is refused while this one owns the file; Provides keeps packages that depend on
		# `map` satisfied. No Replaces: with Conflicts + Replaces opkg-lede removes `map` but
		# leaves map.sh out of this package's file list (nothing owns it afterwards), and
		# OpenWrt's package-pack.mk has no Replaces field either. apk: the provide becomes
		# map=<version> (as package-pack.mk's FormatProvides writes it), which makes this
		# package the owner of the name `map`: `apk add mape-rs-map` removes OpenWrt's map,
		# `apk del mape-rs-map` brings it back while `map` is in the world.
		PKG_CONFLICTS="map"
		PKG_PROVIDES="map"
		PKG_SECTION=net
		PKG_TITLE="proto map (DHCPv6 option 94 MAP-E) handled by mape-rs, replacing OpenWrt's map"
		PKG_DESCRIPTION="Installs /lib/netifd/proto/map.sh running /usr/sbin/mape, in place of OpenWrt's map
package: odhcp6c asks for DHCPv6 option 94 only when netifd lists a map handler, and the
dynamic proto map interface that dhcpv6.script creates from it is then run by mape-rs."
		;;
	luci-proto-mape)
		PKG_ARCHKIND=all
		PKG_DEPENDS="mape-rs, luci-base"
		PKG_SECTION=luci
		PKG_TITLE="LuCI support for MAP-E (mape-rs)"
		PKG_DESCRIPTION="The LuCI protocol page of proto mape: ISP choice, explicit rules checked as the handler
checks them, and the interface's MAP-E status (IPv4 address, PSID, port sets)."
		;;
	luci-i18n-mape-ja)
		PKG_ARCHKIND=all
		PKG_DEPENDS="luci-proto-mape"
		PKG_SECTION=luci
		PKG_TITLE="luci-proto-mape - ja translation"
		PKG_DESCRIPTION="Translation for luci-proto-mape - $PKG_LANG_JA"
		;;
	*)
		echo "pkgdef: unknown package '$1' (known: ${PKG_NAMES[*]})" >&2
		return 2
		;;
	esac
}

# pkg_arch <name> <openwrt-arch>: the Architecture field (opkg): the target's, or "all".
pkg_arch() {
	pkg_meta "$1" || return
	if [ "$PKG_ARCHKIND" = all ]; then echo all; else echo "$2"; fi
}

pkg_is_luci_file() { # <./relative path>
	local p
	for p in "${PKG_LUCI_PATTERNS[@]}"; do
		# shellcheck disable=SC2254
		case $1 in $p) return 0 ;; esac
	done
	return 1
}

# files/ without editor and VCS droppings, as ./-relative paths (files and symlinks).
pkg_files_list() {
	[ -d "$root/files" ] || return 0
	(cd "$root/files" && find . \( -type f -o -type l \) ! -name '.gitkeep' ! -name '.gitignore' \
		! -name '*~' ! -name '.*.sw?' ! -name '*.orig' ! -name '*.rej' | LC_ALL=C sort)
}

# pkg_expected_files <name>: the ./-relative paths (files and symlinks) the package must hold,
# sorted, apart from the package manager's own bookkeeping (apk: /lib/apk/packages/<name>.list).
pkg_expected_files() {
	local f
	{
		case $1 in
		mape-rs)
			echo ./usr/sbin/mape
			for f in "${PKG_LICENSE_FILES[@]}"; do echo ".$PKG_LICENSE_DIR/$f"; done
			pkg_files_list | while read -r f; do pkg_is_luci_file "$f" || echo "$f"; done
			;;
		mape-rs-map) echo ./lib/netifd/proto/map.sh ;;
		luci-proto-mape) pkg_files_list | while read -r f; do pkg_is_luci_file "$f" && echo "$f"; done ;;
		luci-i18n-mape-ja)
			echo ".$PKG_LMO_PATH"
			echo ./etc/uci-defaults/luci-i18n-mape-ja
			;;
		esac
	} | LC_ALL=C sort
}

# pkg_stage <name> <destdir> <mape binary> <lmo>: writes the package's file tree into destdir
# with normalised modes (directories and executables 0755, other files 0644; netifd handlers
# executable). <mape binary> is used by mape-rs only, <lmo> (mape.ja.lmo) by luci-i18n-mape-ja.
pkg_stage() {
	local name=$1 dest=$2 bin=$3 lmo=$4 f
	mkdir -p "$dest"
	case $name in
	mape-rs)
		[ -f "$bin" ] || { echo "pkgdef: mape binary '$bin' not found" >&2; return 1; }
		install -D -m 0755 "$bin" "$dest/usr/sbin/mape"
		for f in "${PKG_LICENSE_FILES[@]}"; do install -D -m 0644 "$root/$f" "$dest$PKG_LICENSE_DIR/$f"; done
		pkg_files_list | while read -r f; do
			pkg_is_luci_file "$f" && continue
			(cd "$root/files" && cp -P --parents "$f" "$dest/")
		done
		;;
	mape-rs-map)
		install -D -m 0755 "$root/compat/map/lib/netifd/proto/map.sh" "$dest/lib/netifd/proto/map.sh"
		;;
	luci-proto-mape)
		pkg_files_list | while read -r f; do
			pkg_is_luci_file "$f" || continue
			(cd "$root/files" && cp -P --parents "$f" "$dest/")
		done
		;;
	luci-i18n-mape-ja)
		[ -f "$lmo" ] || { echo "pkgdef: compiled catalogue '$lmo' not found (po/ja/mape.po through po2lmo)" >&2; return 1; }
		install -D -m 0644 "$lmo" "$dest$PKG_LMO_PATH"
		# As luci.mk's LuciTranslation: registers the language in /etc/config/luci once.
		mkdir -p "$dest/etc/uci-defaults"
		printf "uci set luci.languages.ja='%s'; uci commit luci\n" "$PKG_LANG_JA" >"$dest/etc/uci-defaults/luci-i18n-mape-ja"
		;;
	*) pkg_meta "$name"; return ;;
	esac
	find "$dest" -type d -exec chmod 0755 {} +
	find "$dest" -type f -perm /111 -exec chmod 0755 {} +
	find "$dest" -type f ! -perm /111 -exec chmod 0644 {} +
	if [ -d "$dest/lib/netifd/proto" ]; then
		find "$dest/lib/netifd/proto" -name '*.sh' -type f -exec chmod 0755 {} +
	fi
	return 0
}

# pkg_script <name> postinst|prerm: the package's own part of a maintainer script (what an
# OpenWrt Makefile's Package/<name>/postinst or /prerm holds: opkg keeps it as postinst-pkg /
# prerm-pkg, apk inlines it into post-install / pre-deinstall). Empty: none.
pkg_script() {
	case $1/$2 in
	mape-rs/postinst | mape-rs-map/postinst) cat "$root/packaging/postinst" ;;
	mape-rs/prerm | mape-rs-map/prerm) cat "$root/packaging/prerm" ;;
	luci-proto-mape/postinst) cat "$root/packaging/luci/postinst" ;;
	luci-i18n-mape-ja/postinst) cat "$root/packaging/luci/i18n-postinst" ;;
	*) return 0 ;;
	esac
}

# Cargo.toml's [package] fields.
pkg_cargo_field() {
	awk -v k="$1" '
		/^\[/ { inpkg = ($0 == "[package]"); next }
		inpkg && $1 == k && $2 == "=" { v = $0; sub(/^[^"]*"/, "", v); sub(/".*$/, "", v); print v; exit }
	' "$root/Cargo.toml"
}

# Sets PKG_VERSION (<cargo version>-r<release>), PKG_LICENSE, PKG_MAINTAINER, PKG_URL.
pkg_common() {
	local v
	v=$(pkg_cargo_field version)
	[ -n "$v" ] || { echo "pkgdef: no version in Cargo.toml" >&2; return 1; }
	PKG_VERSION="$v-r${MAPE_RELEASE:-1}"
	PKG_LICENSE=$(pkg_cargo_field license)
	PKG_MAINTAINER=${MAPE_MAINTAINER:-mape-rs developers}
	PKG_URL=$(pkg_cargo_field repository)
}

# SOURCE_DATE_EPOCH for reproducible archives: the caller's, else the last commit's time.
pkg_epoch() {
	if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
		SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
	fi
	export SOURCE_DATE_EPOCH
}

# apk_v3 <apk binary>: true if it is apk-tools 3 (the ADB format OpenWrt 25.12 installs).
apk_v3() {
	local v
	v=$("$1" --version 2>/dev/null) || return 1
	case $v in "apk-tools 3."*) return 0 ;; *) return 1 ;; esac
}

# pkg_find_tools: sets MAPE_APK (apk-tools 3) and MAPE_PO2LMO (LuCI's po2lmo), each empty when
# not found. Looks at the variables themselves, then PATH, then the OpenWrt userland the tests
# build from ../shared/openwrt-src (tests/openwrt/userland.sh; builds it once, ~2 min).
pkg_find_tools() {
	local prefix=""
	if [ -n "${MAPE_APK:-}" ] && ! apk_v3 "$MAPE_APK"; then
		echo "pkgdef: MAPE_APK=$MAPE_APK is not apk-tools 3" >&2
		MAPE_APK=""
	fi
	if [ -z "${MAPE_APK:-}" ] && command -v apk >/dev/null && apk_v3 apk; then MAPE_APK=$(command -v apk); fi
	if [ -z "${MAPE_PO2LMO:-}" ] && command -v po2lmo >/dev/null; then MAPE_PO2LMO=$(command -v po2lmo); fi
	if [ -z "${MAPE_APK:-}" ] || [ -z "${MAPE_PO2LMO:-}" ]; then
		prefix=$("$root/tests/openwrt/userland.sh" 2>/dev/null) || prefix=""
	fi
	if [ -n "$prefix" ]; then
		[ -z "${MAPE_APK:-}" ] && apk_v3 "$prefix/bin/apk" && MAPE_APK=$prefix/bin/apk
		[ -z "${MAPE_PO2LMO:-}" ] && [ -x "$prefix/bin/po2lmo" ] && MAPE_PO2LMO=$prefix/bin/po2lmo
	fi
	MAPE_APK=${MAPE_APK:-}
	MAPE_PO2LMO=${MAPE_PO2LMO:-}
	export MAPE_APK MAPE_PO2LMO
}

# pkg_cli <tool> <args...>: the command line of scripts/ipk.sh and scripts/apk.sh,
# <mape binary|-> <openwrt-arch> [<outdir, default dist> [<package, default mape-rs>]]. Sets
# PKG_NAME, PKG_BIN, PKG_OUTDIR, PKG_ARCH (the package's Architecture: the target's or "all"),
# what pkg_meta and pkg_common set, and SOURCE_DATE_EPOCH. Bad usage: one line, exit 2.
pkg_cli() {
	local tool=$1
	shift
	if [ $# -lt 2 ] || [ $# -gt 4 ]; then
		echo "usage: $tool <mape binary|-> <openwrt-arch> [outdir [package]]" >&2
		exit 2
	fi
	PKG_BIN=$1 PKG_OUTDIR=${3:-dist} PKG_NAME=${4:-mape-rs}
	pkg_known "$PKG_NAME" || { echo "$tool: unknown package '$PKG_NAME' (known: ${PKG_NAMES[*]})" >&2; exit 2; }
	case $2 in "" | *[!A-Za-z0-9_.-]*) echo "$tool: bad OpenWrt architecture '$2'" >&2; exit 2 ;; esac
	pkg_meta "$PKG_NAME"
	pkg_common || exit 1
	pkg_epoch
	PKG_ARCH=$(pkg_arch "$PKG_NAME" "$2")
}
