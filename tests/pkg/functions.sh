# Stand-in for OpenWrt's /lib/functions.sh (base-files), for test roots that are not OpenWrt:
# the three functions OpenWrt's package wrappers call (include/package-pack.mk), doing what
# OpenWrt's do for packages like ours. Written from OpenWrt's documented behaviour, not copied.
# tests/pkg/install-offline.sh --scripts installs it as ROOT/lib/functions.sh when ROOT has none
# (without one the wrappers exit at once and the package's own scripts never run).
#
#   default_postinst [script]  the package's file list is /lib/apk/packages/$pkgname.list (apk)
#                              or /usr/lib/opkg/info/$pkgname.list (opkg; $pkgname from the
#                              script's name when unset). On a live system (no IPKG_INSTROOT):
#                              runs every /etc/uci-defaults script in the list and deletes
#                              those that succeed, then `uci commit`; drops LuCI's index cache.
#                              opkg: then sources the package's postinst-pkg in a subshell.
#                              Enables and starts the package's /etc/init.d scripts.
#   default_prerm [script]     opkg: sources prerm-pkg in a subshell; stops and disables init
#                              scripts.
#   add_group_and_user         nothing (our packages declare no users)

# shellcheck shell=sh

_pkg_filelist() {
	local root="${IPKG_INSTROOT}"
	if [ -f "$root/lib/apk/packages/${pkgname}.list" ]; then
		echo "$root/lib/apk/packages/${pkgname}.list"
	else
		echo "$root/usr/lib/opkg/info/${pkgname}.list"
	fi
}

add_group_and_user() {
	return 0
}

default_postinst() {
	local root="${IPKG_INSTROOT}" ret=0 filelist i
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	filelist="$(_pkg_filelist)"
	if [ -z "$root" ]; then
		for i in $(grep -s '^/etc/uci-defaults/' "$filelist"); do
			( [ -f "$i" ] && cd "$(dirname "$i")" && . "$i" ) && rm -f "$i"
		done
		grep -q -s '^/etc/uci-defaults/' "$filelist" && uci commit
		rm -f /tmp/luci-indexcache.*
	fi
	if [ -f "$root/usr/lib/opkg/info/${pkgname}.postinst-pkg" ]; then
		( . "$root/usr/lib/opkg/info/${pkgname}.postinst-pkg" )
		ret=$?
	fi
	for i in $(grep -s '^/etc/init.d/' "$filelist"); do
		[ -n "$root" ] && continue
		[ "$PKG_UPGRADE" = "1" ] || "$i" enable
		"$i" start
	done
	return $ret
}

default_prerm() {
	local root="${IPKG_INSTROOT}" ret=0 filelist i
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	filelist="$(_pkg_filelist)"
	if [ -f "$root/usr/lib/opkg/info/${pkgname}.prerm-pkg" ]; then
		( . "$root/usr/lib/opkg/info/${pkgname}.prerm-pkg" )
		ret=$?
	fi
	for i in $(grep -s '^/etc/init.d/' "$filelist"); do
		[ -n "$root" ] && continue
		[ "$PKG_UPGRADE" = "1" ] || "$i" disable
		"$i" stop
	done
	return $ret
}
