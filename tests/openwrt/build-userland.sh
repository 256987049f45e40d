#!/usr/bin/env bash
# Builds the real OpenWrt userland natively (x86_64 glibc) with cmake into one prefix, from the
# source tarballs in ../shared/openwrt-src (see its MANIFEST.md): libubox (+jshn), ubus (ubusd,
# CLI), uci, libnl-tiny, ucode (+ fs/uci/ubus/uloop modules, for firewall4), udebug, jsonpath
# (jsonfilter), netifd (+ scripts/netifd-proto.sh), rpcd, odhcp6c, opkg-lede, apk-tools (apk v3),
# copies firewall4's root/ (fw4 is ucode, nothing to compile), unpacks the LuCI subset into
# share/luci (with LuCI's own po2lmo built in bin/) and OpenWrt's dhcpv6.sh/dhcpv6.script into
# share/openwrt-files. Started from the team's reference (../shared/tools/openwrt-userland);
# run it through tests/openwrt/userland.sh, which caches the result.
#
#   SRC=<dir with the *.tar.gz> PREFIX=<install prefix> build.sh      (about 2 min on 2 CPUs)
#   ONLY="netifd rpcd" ...  rebuilds only those (the others must be installed already)
#
# Host packages: build-essential cmake pkg-config libjson-c-dev meson ninja-build libssl-dev
# zlib1g-dev (plus, to run netifd's scripts: busybox, since dash lacks `export -n`).
# Result: $PREFIX/{bin,sbin,lib,include,share}; $PREFIX/BUILD-INFO names every tarball.
set -euo pipefail
: "${SRC:?set SRC (the directory holding the source tarballs)}"
: "${PREFIX:?set PREFIX (install prefix)}"
JOBS=${JOBS:-$(nproc)}
mkdir -p "$PREFIX"
P=$(cd "$PREFIX" && pwd)
B=$P/build
mkdir -p "$P/src" "$B"
: >"$P/BUILD-INFO"
for n in libubox ubus uci libnl-tiny ucode udebug jsonpath netifd rpcd odhcp6c opkg-lede apk-tools firewall4; do
	t=$SRC/$n.tar.gz
	[ -f "$t" ] || { echo "build.sh: missing $t" >&2; exit 1; }
	rm -rf "$P/src/$n" && tar -xzf "$t" -C "$P/src"
	echo "$n $(sha256sum "$t" | cut -c1-16)" >>"$P/BUILD-INFO"
done

export PKG_CONFIG_PATH=$P/lib/pkgconfig:$P/share/pkgconfig
export CFLAGS="-I$P/include -O2 -g -Wno-error"
export LDFLAGS="-L$P/lib -Wl,-rpath,$P/lib"
CM=(cmake -DCMAKE_INSTALL_PREFIX="$P" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE=RelWithDebInfo
	-DCMAKE_INSTALL_RPATH="$P/lib" -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_C_FLAGS="$CFLAGS"
	-DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$LDFLAGS"
	-DCMAKE_MODULE_LINKER_FLAGS="$LDFLAGS" -Wno-dev)
build() { # build <name> [cmake args...]; INSOURCE=1: build in the source tree (jsonpath)
	local n=$1 d; shift
	echo "== $n" >&2
	if [ "${INSOURCE:-}" = 1 ]; then d=$P/src/$n; else d=$B/$n; rm -rf "$d" && mkdir -p "$d"; fi
	(cd "$d" && "${CM[@]}" "$@" "$P/src/$n" >cmake.log 2>&1 && make -j"$JOBS" >make.log 2>&1 && make install >install.log 2>&1) || {
		echo "build.sh: $n failed; see $d/{cmake,make,install}.log" >&2
		tail -n 20 "$d/make.log" "$d/cmake.log" 2>/dev/null >&2
		exit 1
	}
}
only() { [ -z "${ONLY:-}" ] || case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ONLY="netifd opkg-lede" build.sh: rebuild only those (the others must be installed already)
only libubox && build libubox -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF -DUNIT_TESTING=OFF
only libnl-tiny && build libnl-tiny
only ubus && build ubus -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF -DBUILD_STATIC=OFF
only uci && build uci -DBUILD_LUA=OFF -DBUILD_STATIC=OFF
# ucode: modules fw4 needs (fs, uci, ubus, math, struct, uloop); netifd links libucode.
only ucode && build ucode -DSOVERSION=0 -DNL80211_SUPPORT=OFF -DRTNL_SUPPORT=OFF -DDIGEST_SUPPORT=OFF \
	-DRESOLV_SUPPORT=OFF -DSOCKET_SUPPORT=OFF -DZLIB_SUPPORT=OFF -DUBUS_SUPPORT=ON -DUCI_SUPPORT=ON \
	-DULOOP_SUPPORT=ON -DFS_SUPPORT=ON -DMATH_SUPPORT=ON -DSTRUCT_SUPPORT=ON -DLOG_SUPPORT=ON \
	-DDEBUG_SUPPORT=OFF -DIO_SUPPORT=ON
only udebug && build udebug -DRUNSTATEDIR=/var/run
# jsonpath at this commit reads no JSON from stdin (it parses only with -i or -s), so every
# `ubus call ... | jsonfilter -e ...` of OpenWrt's scripts gets nothing: a known regression
# (openwrt/packages#28873, fixed upstream after this commit). firewall4's hotplug script pipes
# like that, so the bed builds jsonpath to read stdin when it has a filter and neither option.
if grep -q 'if (!jsobj && i_s_flag)' "$P/src/jsonpath/main.c"; then
	sed -i 's/if (!jsobj \&\& i_s_flag)/if (!jsobj \&\& (i_s_flag || t_e_flag))/' "$P/src/jsonpath/main.c"
fi
only jsonpath && INSOURCE=1 build jsonpath
# netifd (in-source: its ethtool-modes.h rule runs ./make_ethtool_modes_h.sh): OpenWrt builds it with -DLIBNL_LIBS=-lnl-tiny (package/network/config/netifd/Makefile)
# Built against a newer glibc/ucode than OpenWrt's: ucode/util.h needs vasprintf (_GNU_SOURCE),
# which some files define again, so -Werror is dropped.
sed -i 's/ADD_DEFINITIONS(-Wall -Werror)/ADD_DEFINITIONS(-Wall)/' "$P/src/netifd/CMakeLists.txt"
# Debian 12's kernel headers (6.1) lack the IEEE 802.3 clause-33 PSE attributes (Linux 6.9+)
# that netifd's PSE code (unused here) names: define them with the kernel's values.
if ! grep -q ETHTOOL_A_C33_PSE_ADMIN_STATE /usr/include/linux/ethtool_netlink.h 2>/dev/null &&
	! grep -q compat-pse.h "$P/src/netifd/system-linux.c"; then
	cat >"$P/src/netifd/compat-pse.h" <<'H'
/* build.sh: C33 PSE names from Linux >= 6.9 uapi (ethtool.h, ethtool_netlink.h) */
#define ETHTOOL_A_C33_PSE_ADMIN_STATE 5
#define ETHTOOL_A_C33_PSE_ADMIN_CONTROL 6
#define ETHTOOL_A_C33_PSE_PW_D_STATUS 7
#define ETHTOOL_A_C33_PSE_PW_CLASS 8
#define ETHTOOL_A_C33_PSE_ACTUAL_PW 9
#define ETHTOOL_A_C33_PSE_EXT_STATE 10
#define ETHTOOL_A_C33_PSE_EXT_SUBSTATE 11
#define ETHTOOL_A_C33_PSE_AVAIL_PW_LIMIT 12
#undef ETHTOOL_A_PSE_MAX
#define ETHTOOL_A_PSE_MAX 12
#define ETHTOOL_C33_PSE_ADMIN_STATE_DISABLED 2
#define ETHTOOL_C33_PSE_ADMIN_STATE_ENABLED 3
#define ETHTOOL_C33_PSE_PW_D_STATUS_DISABLED 2
#define ETHTOOL_C33_PSE_PW_D_STATUS_SEARCHING 3
#define ETHTOOL_C33_PSE_PW_D_STATUS_DELIVERING 4
#define ETHTOOL_C33_PSE_PW_D_STATUS_TEST 5
#define ETHTOOL_C33_PSE_PW_D_STATUS_FAULT 6
#define ETHTOOL_C33_PSE_PW_D_STATUS_OTHERFAULT 7
H
	sed -i 's|^#include <linux/ethtool_netlink.h>|&\n#include "compat-pse.h"|' "$P/src/netifd/system-linux.c"
fi
only netifd && INSOURCE=1 build netifd -DLIBNL_LIBS="$P/lib/libnl-tiny.so" -DCMAKE_C_FLAGS="$CFLAGS -D_GNU_SOURCE -I$P/include/libnl-tiny"
only opkg-lede && build opkg-lede -DSTATIC_UBOX=OFF -DBUILD_TESTS=OFF -DPATH_SPEC="/usr/sbin:/usr/bin:/sbin:/bin" \
	-DHOST_CPU=x86_64 -DBUILD_CPU=x86_64

only odhcp6c && build odhcp6c -DUBUS=1
only rpcd && build rpcd -DFILE_SUPPORT=ON -DIWINFO_SUPPORT=OFF -DRPCSYS_SUPPORT=OFF -DUCODE_SUPPORT=OFF
# apk-tools v3 (meson): the apk that installs .apk packages on OpenWrt 25.12 and later.
if only apk-tools; then
	echo "== apk-tools" >&2
	(cd "$P/src/apk-tools" && rm -rf "$B/apk-tools" &&
		meson setup "$B/apk-tools" --prefix="$P" --libdir=lib -Ddocs=disabled -Dhelp=disabled -Dlua=disabled \
			-Dtests=disabled -Dpython=disabled >"$P/apk-meson.log" 2>&1 &&
		ninja -C "$B/apk-tools" >>"$P/apk-meson.log" 2>&1 && ninja -C "$B/apk-tools" install >>"$P/apk-meson.log" 2>&1) || {
		echo "build.sh: apk-tools failed; see $P/apk-meson.log" >&2; tail -n 20 "$P/apk-meson.log" >&2; exit 1; }
fi

# --- scripts netifd and OpenWrt's shell helpers need ---------------------------------------
mkdir -p "$P/share/netifd-scripts"
cp -a "$P/src/netifd/scripts/." "$P/share/netifd-scripts/"
if [ -d "$P/src/firewall4/root" ]; then
	rm -rf "$P/share/firewall4-root" && cp -a "$P/src/firewall4/root" "$P/share/firewall4-root"
fi
# LuCI subset (JS views, po/ja, po2lmo sources) and OpenWrt's DHCPv6 handler scripts
rm -rf "$P/share/luci" "$P/share/openwrt-files"
mkdir -p "$P/share/luci" "$P/share/openwrt-files"
tar -xzf "$SRC/luci-subset.tar.gz" -C "$P/share/luci" --strip-components=1
tar -xzf "$SRC/openwrt-files.tar.gz" -C "$P/share/openwrt-files" --strip-components=1
echo "luci-subset $(sha256sum "$SRC/luci-subset.tar.gz" | cut -c1-16)" >>"$P/BUILD-INFO"
echo "openwrt-files $(sha256sum "$SRC/openwrt-files.tar.gz" | cut -c1-16)" >>"$P/BUILD-INFO"
echo "== po2lmo" >&2
(cd "$P/share/luci/modules/luci-base/src" && make po2lmo >"$P/po2lmo.log" 2>&1 && install -m 755 po2lmo "$P/bin/po2lmo") || {
	echo "build.sh: po2lmo failed; see $P/po2lmo.log" >&2; tail -n 20 "$P/po2lmo.log" >&2; exit 1; }

# OpenWrt's names for two of them
ln -sf jsonpath "$P/bin/jsonfilter"
if only jsonpath; then
	v=$(echo '{"a":{"b":"c"}}' | LD_LIBRARY_PATH="$P/lib" "$P/bin/jsonfilter" -e 'V=@.a.b') || true
	case $v in "export V='c';"*) ;; *) echo "jsonfilter reads no JSON from a pipe (got: $v)" >&2; exit 1 ;; esac
fi
ln -sf opkg-cl "$P/bin/opkg"
for t in netifd ubusd ubus uci jshn jsonfilter opkg ucode rpcd odhcp6c apk po2lmo udebugd; do
	f=$(ls "$P"/sbin/$t "$P"/bin/$t 2>/dev/null | head -1) || true
	[ -n "$f" ] && echo "built: $f" >&2 || { echo "build.sh: $t not built" >&2; [ "$t" = udebugd ] || exit 1; }
done
echo "build.sh: done; prefix $P" >&2
