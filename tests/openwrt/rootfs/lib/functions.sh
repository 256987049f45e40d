# Stand-in for OpenWrt's /lib/functions.sh (package base-files, which is not among the sources in
# ../shared/openwrt-src). Only what the real scripts of the test bed call is here, written from
# what OpenWrt's version does:
#   - append / list_contains            (dhcpv6.sh, uci-defaults scripts)
#   - default_postinst / default_prerm  (the postinst/prerm wrappers every .ipk carries)
# default_postinst PKGSCRIPT: sources /usr/lib/opkg/info/<pkg>.postinst-pkg in a subshell, then
# (only on a live system, IPKG_INSTROOT empty) runs every /etc/uci-defaults/ file the package
# installed, in its own subshell from that folder, deleting each one that succeeded, and commits
# uci. default_prerm PKGSCRIPT: sources <pkg>.prerm-pkg in a subshell. Init scripts (/etc/init.d)
# are not handled: the package installs none.

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

default_postinst() {
	local root="${IPKG_INSTROOT}" pkg list ret=0 f
	pkg="$(_pkg_of "$1")"
	list="$root/usr/lib/opkg/info/$pkg.list"
	if [ -f "$root/usr/lib/opkg/info/$pkg.postinst-pkg" ]; then
		( . "$root/usr/lib/opkg/info/$pkg.postinst-pkg" )
		ret=$?
	fi
	if [ -z "$root" ] && grep -q '^/etc/uci-defaults/' "$list" 2>/dev/null; then
		mkdir -p /tmp/.uci
		for f in $(grep '^/etc/uci-defaults/' "$list"); do
			[ -f "$f" ] || continue
			( cd "${f%/*}" && . "$f" ) && rm -f "$f"
		done
		uci commit
	fi
	return $ret
}

default_prerm() {
	local root="${IPKG_INSTROOT}" pkg ret=0
	pkg="$(_pkg_of "$1")"
	if [ -f "$root/usr/lib/opkg/info/$pkg.prerm-pkg" ]; then
		( . "$root/usr/lib/opkg/info/$pkg.prerm-pkg" )
		ret=$?
	fi
	return $ret
}
