# Stand-in for OpenWrt's /lib/functions.sh (package base-files, which is not among the sources in
# ../shared/openwrt-src). Only what the real scripts of the test bed call is here, written from
# what OpenWrt's current version does:
#   - append / list_contains            (dhcpv6.sh, uci-defaults scripts)
#   - default_postinst / default_prerm  (the maintainer-script wrappers of every package: an .ipk's
#     postinst calls `default_postinst $0 "$@"`; an .apk's post-install exports $pkgname (and
#     $root) and calls it without arguments, then runs the package's own postinst body inline)
#   - add_group_and_user                (called by an .apk's post-install; our packages create
#     no users, so it does nothing here)
# default_postinst [PKGSCRIPT]: the package is $pkgname, else PKGSCRIPT's name; its file list is
# lib/apk/packages/<pkg>.list (apk) or usr/lib/opkg/info/<pkg>.list (opkg). On a live system
# (IPKG_INSTROOT empty) it runs every /etc/uci-defaults/ file the package installed, in its own
# subshell from that folder, deleting each one that succeeded, and commits uci; then it sources
# usr/lib/opkg/info/<pkg>.postinst-pkg (opkg) in a subshell. default_prerm: sources
# <pkg>.prerm-pkg in a subshell. Init scripts (/etc/init.d) are not handled: our packages
# install none.

append() {
	local var="$1" value="$2" sep="${3:- }"
	eval "export -- \"$var=\${$var:+\${$var}\${value:+\$sep}}\$value\""
}

list_contains() {
	local var="$1" str="$2" val
	eval "val=\" \${$var} \""
	[ "${val%% $str *}" != "$val" ]
}

_pkg_of() { # /usr/lib/opkg/info/mape-rs.postinst -> mape-rs
	local b="${1##*/}"
	echo "${b%.*}"
}

_filelist_of() { # the package's file list, apk's or opkg's
	if [ -f "${IPKG_INSTROOT}/lib/apk/packages/$1.list" ]; then
		echo "${IPKG_INSTROOT}/lib/apk/packages/$1.list"
	else
		echo "${IPKG_INSTROOT}/usr/lib/opkg/info/$1.list"
	fi
}

add_group_and_user() {
	:
}

default_postinst() {
	local root="${IPKG_INSTROOT}" list ret=0 f
	# apk's wrapper exports $pkgname; an .ipk's passes its own path. The package's postinst body
	# reads $pkgname too (it is sourced from here).
	[ -n "$pkgname" ] || local pkgname="$(_pkg_of "$1")"
	list="$(_filelist_of "$pkgname")"
	if [ -z "$root" ] && grep -q '^/etc/uci-defaults/' "$list" 2>/dev/null; then
		mkdir -p /tmp/.uci
		for f in $(grep '^/etc/uci-defaults/' "$list"); do
			[ -f "$f" ] || continue
			( cd "${f%/*}" && . "$f" ) && rm -f "$f"
		done
		uci commit
	fi
	if [ -f "$root/usr/lib/opkg/info/$pkgname.postinst-pkg" ]; then
		( . "$root/usr/lib/opkg/info/$pkgname.postinst-pkg" )
		ret=$?
	fi
	return $ret
}

default_prerm() {
	local root="${IPKG_INSTROOT}" ret=0
	[ -n "$pkgname" ] || local pkgname="$(_pkg_of "$1")"
	if [ -f "$root/usr/lib/opkg/info/$pkgname.prerm-pkg" ]; then
		( . "$root/usr/lib/opkg/info/$pkgname.prerm-pkg" )
		ret=$?
	fi
	return $ret
}
