#!/usr/bin/env bash
# Writes the package indexes of one feed directory (one OpenWrt architecture), so that the
# directory can be served over HTTP and added as a feed:
#   Packages, Packages.gz  opkg's index (OpenWrt's scripts/ipkg-make-index.sh layout: each .ipk's
#                          control file plus Filename, Size and SHA256sum, blank-line separated;
#                          opkg-lede reads Packages.gz for `src/gz` feeds, Packages for `src`)
#   packages.adb           apk's index (`apk mkndx`, apk-tools 3, unsigned), when MAPE_APK is set
# Reproducible: entries sorted by file name, gzip -n; apk mkndx records no time.
#
# Usage: scripts/feed.sh <dir>
# Env:   MAPE_APK  apk-tools 3 binary; without it the directory gets no packages.adb
set -euo pipefail
export LC_ALL=C

[ $# -eq 1 ] || { echo "usage: $0 <feed dir>" >&2; exit 2; }
dir=$1
[ -d "$dir" ] || { echo "feed.sh: $dir: no such directory" >&2; exit 1; }
cd "$dir"

shopt -s nullglob
ipks=(*.ipk)
apks=(*.apk)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/Packages"
for f in "${ipks[@]}"; do
	tar -xzOf "$f" ./control.tar.gz | tar -xzOf - ./control >"$tmp/control" || {
		echo "feed.sh: $dir/$f: no ./control in ./control.tar.gz" >&2
		exit 1
	}
	# control as it is, minus a trailing blank line; the file fields after Installed-Size
	# would do as well, opkg does not care about the order.
	sed -e '/^$/d' "$tmp/control" >>"$tmp/Packages"
	{
		echo "Filename: $f"
		echo "Size: $(stat -c %s "$f")"
		echo "SHA256sum: $(sha256sum "$f" | cut -d' ' -f1)"
		echo
	} >>"$tmp/Packages"
done
mv "$tmp/Packages" Packages
gzip -9n <Packages >Packages.gz.tmp && mv Packages.gz.tmp Packages.gz

rm -f packages.adb
if [ ${#apks[@]} -gt 0 ]; then
	if [ -n "${MAPE_APK:-}" ]; then
		"$MAPE_APK" mkndx --allow-untrusted --output packages.adb.tmp "${apks[@]}" >&2
		mv packages.adb.tmp packages.adb
	else
		echo "feed.sh: $dir has .apk files but MAPE_APK is not set: no packages.adb" >&2
	fi
fi
echo "$dir: ${#ipks[@]} .ipk in Packages(.gz), ${#apks[@]} .apk$([ -f packages.adb ] && echo " in packages.adb")"
