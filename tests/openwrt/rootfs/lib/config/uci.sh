# Stand-in for OpenWrt's /lib/config/uci.sh (package base-files, not among the sources): the one
# helper dhcpv6.sh calls, on top of the real uci CLI.
#   uci_get CONFIG [SECTION [OPTION [DEFAULT]]]
uci_get() {
	local v
	v="$(uci -q get "$1${2:+.$2}${3:+.$3}")" || v="$4"
	echo "$v"
}
