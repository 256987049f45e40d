#!/usr/bin/env bash
# The packages of scripts/dist.sh (x86_64 feed) with OpenWrt's real package managers, opkg-lede
# and apk-tools 3, and LuCI's real catalogue loader, all built from ../shared/openwrt-src by
# tests/openwrt/userland.sh:
#   1. the Japanese catalogue: every _() string of mape.js translated, .pot up to date
#      (scripts/i18n.py check; negative controls on a copy);
#   2. offline installs of the four .ipk (opkg) and the four .apk (apk) into OpenWrt-like roots
#      (tests/pkg/install-offline.sh), what they install and record; refused without their
#      dependencies and for another architecture;
#   3. the installed mape.ja.lmo read by LuCI's own luci.core module (lmo.c, luci.c from the
#      LuCI subset) as the ucode dispatcher reads it: every msgid gives its msgstr;
#   4. mape-rs-map next to a package carrying /lib/netifd/proto/map.sh like OpenWrt's `map`:
#      opkg refuses either while the other is installed and never overwrites; apk replaces
#      `map` from a repository, keeps ownership right, and brings `map` back on removal;
#   5. an opkg upgrade from the single-package layout (mape.js in mape-rs) to the split;
#   6. the feed: opkg update + install and apk add from dist/feed/x86_64 over file:// and over
#      HTTP (a local python3 http.server; opkg fetches with wget), checksums enforced;
#   7. the maintainer scripts as the package managers run them on a router: apk (chrooting as
#      it does) and opkg (run inside the chroot) install and remove the packages in a chroot
#      with busybox, tests/pkg/functions.sh standing in for OpenWrt's /lib/functions.sh, and
#      logging stand-ins for ubus and uci (tests/pkg/stub-*): the fw4 include is registered by
#      the uci-defaults script (found through the package's file list), netifd restarted once
#      for mape-rs and mape-rs-map together, Japanese added to LuCI's languages, and removal
#      takes the fw4 include away.
# Prints one `ok`/`FAIL` line per check and `N passed, M failed`; exit 1 on failure, 77 (one
# SKIP line) when the OpenWrt sources are absent outside CI.
#
# Usage: tests/pkg/run.sh            (after scripts/dist.sh; as root: chroot, mknod)
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."
ROOT=$PWD

# shellcheck source=scripts/checks.sh
. scripts/checks.sh

prefix=$(tests/openwrt/userland.sh)
rc=$?
[ $rc = 0 ] || exit $rc
OPKG=$prefix/bin/opkg
APK=$prefix/bin/apk
UCODE=$prefix/bin/ucode
export MAPE_OPKG=$OPKG MAPE_APK=$APK
I=tests/pkg/install-offline.sh

root=$ROOT
# shellcheck source=scripts/pkgdef.sh
. scripts/pkgdef.sh
pkg_common
V=$PKG_VERSION
FEED=$ROOT/dist/feed/x86_64
W=$(mktemp -d)
server=""
mounts=()
cleanup() {
	[ -n "$server" ] && kill "$server" 2>/dev/null
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done
	rm -rf "$W"
}
trap cleanup EXIT

# --- 1. the Japanese catalogue -------------------------------------------------------------
out=$(python3 scripts/i18n.py check 2>&1)
if [ $? = 0 ]; then ok "i18n: $(sed 's/^i18n: //' <<<"$out")"; else bad "i18n: $out"; fi
if command -v msgfmt >/dev/null; then
	check "i18n: msgfmt --check accepts po/ja/mape.po and po/templates/mape.pot" \
		bash -c 'msgfmt --check -o /dev/null po/ja/mape.po && msgfmt --check -o /dev/null po/templates/mape.pot'
fi
# Negative controls on a copy: a new string in the view, a translation removed, a placeholder
# dropped: each must fail the check with its own message.
neg=$W/i18n
mkdir -p "$neg/files/www/luci-static/resources/protocol" "$neg/po"
cp -r po/. "$neg/po/"
cp files/www/luci-static/resources/protocol/mape.js "$neg/files/www/luci-static/resources/protocol/"
printf "\nvar x = _('A string nobody translated');\n" >>"$neg/files/www/luci-static/resources/protocol/mape.js"
out=$(MAPE_I18N_ROOT=$neg python3 scripts/i18n.py check 2>&1)
check "i18n control: a new _() string in mape.js fails the check (stale .pot, no Japanese entry)" \
	bash -c 'grep -q "mape.pot is stale" <<<"$1" && grep -q "no entry for \"A string nobody translated\"" <<<"$1"' _ "$out"
cp files/www/luci-static/resources/protocol/mape.js "$neg/files/www/luci-static/resources/protocol/"
python3 - "$neg/po/ja/mape.po" <<'EOF'
import sys
p = sys.argv[1]
s = open(p, encoding="utf-8").read()
s = s.replace('msgstr "トンネルリンク"', 'msgstr ""', 1)
s = s.replace('msgstr "%d から %d までの値である必要があります"', 'msgstr "%d 以上の値である必要があります"', 1)
open(p, "w", encoding="utf-8").write(s)
EOF
out=$(MAPE_I18N_ROOT=$neg python3 scripts/i18n.py check 2>&1)
check "i18n control: an empty msgstr and a dropped %d fail the check" \
	bash -c 'grep -q "no translation for \"Tunnel link\"" <<<"$1" && grep -q "placeholders or tags differ for \"Expecting a value between %d and %d\"" <<<"$1"' _ "$out"

# --- the packages under test ---------------------------------------------------------------
ipks=() apks=()
for n in "${PKG_NAMES[@]}"; do
	pkg_meta "$n"
	if [ "$PKG_ARCHKIND" = target ]; then ipks+=("$FEED/${n}_${V}_x86_64.ipk"); else ipks+=("$FEED/${n}_${V}_all.ipk"); fi
	apks+=("$FEED/$n-$V.apk")
done
missing=""
for f in "${ipks[@]}" "${apks[@]}"; do [ -f "$f" ] || missing+=" $(basename "$f")"; done
if [ -n "$missing" ]; then
	bad "dist/feed/x86_64 lacks$missing (run scripts/dist.sh x86_64)"
	finish
fi
ipk_of() { for f in "${ipks[@]}"; do case $(basename "$f") in "$1"_*) echo "$f" ;; esac; done; }
apk_of() { echo "$FEED/$1-$V.apk"; }
opkg_in() { "$OPKG" -o "$1" -f "$1/etc/opkg.conf" "${@:2}"; }
apk_in() { "$APK" --root "$1" --no-network "${@:2}"; }
installed_opkg() { opkg_in "$1" list-installed 2>/dev/null | grep -v -- '- 0-standin$' | sed 's/ - /=/' | sort | tr '\n' ' '; }
installed_apk() { apk_in "$1" list --installed 2>/dev/null | awk '{print $1}' | grep -v '^openwrt-base-standin' | sort | tr '\n' ' '; }
want_set="luci-i18n-mape-ja=$V luci-proto-mape=$V mape-rs-map=$V mape-rs=$V "
want_apk_set="luci-i18n-mape-ja-$V luci-proto-mape-$V mape-rs-$V mape-rs-map-$V "
# The files every install must leave, from the packages' own sources.
same_files() { # <root>
	cmp -s "$1/usr/sbin/mape" dist/bin/x86_64/mape &&
		cmp -s "$1/lib/netifd/proto/mape.sh" files/lib/netifd/proto/mape.sh && test -x "$1/lib/netifd/proto/mape.sh" &&
		cmp -s "$1/lib/netifd/proto/map.sh" compat/map/lib/netifd/proto/map.sh && test -x "$1/lib/netifd/proto/map.sh" &&
		cmp -s "$1/www/luci-static/resources/protocol/mape.js" files/www/luci-static/resources/protocol/mape.js &&
		cmp -s "$1/usr/share/licenses/mape-rs/LICENSE-MIT" LICENSE-MIT &&
		test -s "$1$PKG_LMO_PATH" && test -f "$1/etc/uci-defaults/90-mape-rs"
}

# --- 2. offline installs -------------------------------------------------------------------
R=$W/opkg-root
out=$($I ipk "$R" "${ipks[@]}" 2>&1)
check "opkg: installs the four .ipk offline (exit 0, no errors)" test $? = 0
check "opkg: list-installed = $want_set" test "$(installed_opkg "$R")" = "$want_set"
check "opkg: /usr/sbin/mape, mape.sh, map.sh, mape.js, licence, mape.ja.lmo, uci-defaults are the packages' files" same_files "$R"
check "opkg: records mape-rs's Depends ($(pkg_meta mape-rs; echo "$PKG_DEPENDS"))" \
	bash -c 'grep -A12 "^Package: mape-rs$" "$1/usr/lib/opkg/status" | grep -qx "Depends: kmod-ip6-tunnel, kmod-nft-nat, nftables, ubus"' _ "$R"
check "opkg: keeps postinst-pkg/prerm-pkg (run by default_postinst on the router)" \
	bash -c 'cmp "$1/usr/lib/opkg/info/mape-rs.postinst-pkg" packaging/postinst && cmp "$1/usr/lib/opkg/info/mape-rs-map.prerm-pkg" packaging/prerm' _ "$R"
check "opkg: luci-proto-mape owns mape.js, luci-i18n-mape-ja owns mape.ja.lmo" \
	bash -c 'grep -qx /www/luci-static/resources/protocol/mape.js "$1/usr/lib/opkg/info/luci-proto-mape.list" && grep -qx "$2" "$1/usr/lib/opkg/info/luci-i18n-mape-ja.list"' _ "$R" "$PKG_LMO_PATH"
out=$($I --no-standins ipk "$W/opkg-nodeps" "$(ipk_of mape-rs)" 2>&1)
check "opkg control: refused without its dependencies (kmod-ip6-tunnel ... not recorded)" \
	bash -c '[ "$1" != 0 ] && grep -q "cannot find dependency kmod-ip6-tunnel" <<<"$2" && [ ! -e "$3/usr/sbin/mape" ]' _ $? "$out" "$W/opkg-nodeps"
if [ -f "dist/mape-rs_${V}_mipsel_24kc.ipk" ]; then
	out=$($I ipk "$W/opkg-arch" "dist/mape-rs_${V}_mipsel_24kc.ipk" 2>&1)
	check "opkg control: the mipsel_24kc .ipk is refused by an x86_64 root" \
		bash -c '[ "$1" != 0 ] && grep -q "incompatible with the architectures configured" <<<"$2" && [ ! -e "$3/usr/sbin/mape" ]' _ $? "$out" "$W/opkg-arch"
fi

A=$W/apk-root
out=$($I apk "$A" "${apks[@]}" 2>&1)
check "apk: installs the four .apk offline (--allow-untrusted, exit 0)" test $? = 0
check "apk: installed = $want_apk_set" test "$(installed_apk "$A")" = "$want_apk_set"
check "apk: the same files as the .ipk install" same_files "$A"
check "apk: installed the /lib/apk/packages/<name>.list files default_postinst reads" \
	bash -c 'for n in mape-rs mape-rs-map luci-proto-mape luci-i18n-mape-ja; do grep -qx /usr/sbin/mape "$1/lib/apk/packages/mape-rs.list" && test -s "$1/lib/apk/packages/$n.list" || exit 1; done' _ "$A"
check "apk: records mape-rs's dependencies (apk info -R)" \
	bash -c '[ "$("$0" --root "$1" --no-network info -R mape-rs 2>/dev/null | grep -E "^(kmod|nftables|ubus)" | sort | tr "\n" " ")" = "kmod-ip6-tunnel kmod-nft-nat nftables ubus " ]' "$APK" "$A"
check "apk: mape-rs-map owns map.sh, luci-proto-mape owns mape.js" \
	bash -c '"$0" --root "$1" info --who-owns /lib/netifd/proto/map.sh | grep -q "mape-rs-map-" && "$0" --root "$1" info --who-owns /www/luci-static/resources/protocol/mape.js | grep -q "luci-proto-mape-"' "$APK" "$A"
check "apk: stored the post-install, post-upgrade and pre-deinstall scripts" \
	bash -c 'tar tzf "$1/lib/apk/db/scripts.tar.gz" | grep -q "^mape-rs-$2.*post-install$" && tar tzf "$1/lib/apk/db/scripts.tar.gz" | grep -q "^mape-rs-map-$2.*pre-deinstall$"' _ "$A" "$V"
out=$($I --no-standins apk "$W/apk-nodeps" "$(apk_of mape-rs)" 2>&1)
check "apk control: refused without its dependencies" \
	bash -c '[ "$1" != 0 ] && grep -q "kmod-ip6-tunnel (no such package)" <<<"$2" && [ ! -e "$3/usr/sbin/mape" ]' _ $? "$out" "$W/apk-nodeps"
if [ -f "dist/feed/mipsel_24kc/mape-rs-$V.apk" ]; then
	out=$($I apk "$W/apk-arch" "dist/feed/mipsel_24kc/mape-rs-$V.apk" 2>&1)
	check "apk control: the mipsel_24kc .apk is refused by an x86_64 root ('uninstallable', arch: mipsel_24kc)" \
		bash -c '[ "$1" != 0 ] && grep -q "uninstallable" <<<"$2" && grep -q "arch: mipsel_24kc" <<<"$2" && [ ! -e "$3/usr/sbin/mape" ]' _ $? "$out" "$W/apk-arch"
fi

# --- 3. the catalogue through LuCI's own loader --------------------------------------------
core=$W/luci-core
mkdir -p "$core/luci"
src=$prefix/share/luci/modules/luci-base/src
if gcc -O2 -fPIC -shared -D_GNU_SOURCE -I"$prefix/include" -I"$src/lib" -o "$core/luci/core.so" \
	"$src/lib/luci.c" "$src/lib/lmo.c" "$src/lib/plural_formula.c" -lcrypt >"$W/core.log" 2>&1; then
	python3 - po/ja/mape.po >"$W/po.json" <<'EOF'
import json, sys
sys.path.insert(0, "scripts")
import i18n
entries = [e for e in i18n.parse_po(open(sys.argv[1], encoding="utf-8").read()) if e["msgid"]]
print(json.dumps([[e["msgid"], e["msgstr"]] for e in entries], ensure_ascii=False))
EOF
	cat >"$W/tr.uc" <<'EOF'
// As LuCI's dispatcher: load_catalog(lang, '/usr/lib/lua/luci/i18n'), change_catalog(lang).
import { load_catalog, change_catalog, translate } from 'luci.core';
import { readfile } from 'fs';
let dir = ARGV[0], entries = json(readfile(ARGV[1])), bad = 0, n = 0;
if (load_catalog('ja', dir) !== true) { print("FAIL no ja catalogue in ", dir, "\n"); exit(1); }
change_catalog('ja');
for (let e in entries) {
	let got = translate(e[0]);
	// po2lmo leaves out entries whose msgstr equals the msgid: LuCI then shows the msgid.
	if ((got ?? e[0]) !== e[1]) { bad++; print("FAIL ", e[0], " -> ", got, "\n"); }
	n++;
}
if (translate('A string nobody translated') !== null) { bad++; print("FAIL an unknown string is translated\n"); }
print(bad ? "FAIL " : "ok ", n, " strings\n");
exit(bad ? 1 : 0);
EOF
	for r in "$R" "$A"; do
		out=$("$UCODE" -L "$core/*.so" "$W/tr.uc" "$r/usr/lib/lua/luci/i18n" "$W/po.json" 2>&1)
		check "LuCI's luci.core loads the installed mape.ja.lmo ($(basename "$r")): every msgid gives its Japanese msgstr ($(tail -1 <<<"$out"))" \
			test "$(tail -1 <<<"$out")" = "ok $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$W/po.json") strings"
	done
	mkdir -p "$W/empty-i18n"
	out=$("$UCODE" -L "$core/*.so" "$W/tr.uc" "$W/empty-i18n" "$W/po.json" 2>&1)
	check "LuCI catalogue control: without mape.ja.lmo the check fails" grep -q "FAIL no ja catalogue" <<<"$out"
else
	bad "could not build LuCI's luci.core from $src (see below)"
	tail -5 "$W/core.log"
fi

# --- 4. mape-rs-map next to OpenWrt's map --------------------------------------------------
# A package named map carrying /lib/netifd/proto/map.sh, as OpenWrt's map does (version 8-r1).
fm=$W/fakemap
mkdir -p "$fm/data/lib/netifd/proto" "$fm/ctrl" "$fm/repo"
printf '#!/bin/sh\n# stand-in for OpenWrt map.sh\n' >"$fm/data/lib/netifd/proto/map.sh"
chmod 0755 "$fm/data/lib/netifd/proto/map.sh"
printf 'Package: map\nVersion: 8-r1\nDepends: kmod-ip6-tunnel\nArchitecture: all\nInstalled-Size: 40\nDescription: stand-in for OpenWrt map\n' >"$fm/ctrl/control"
(cd "$fm/data" && tar --owner=0 --group=0 -czf ../data.tar.gz .) && (cd "$fm/ctrl" && tar --owner=0 --group=0 -czf ../control.tar.gz .)
echo 2.0 >"$fm/debian-binary"
(cd "$fm" && tar -czf map_8-r1_all.ipk ./debian-binary ./data.tar.gz ./control.tar.gz)
SOURCE_DATE_EPOCH=0 "$APK" mkpkg --no-xattrs -I name:map -I version:8-r1 -I arch:noarch -I depends:kmod-ip6-tunnel \
	-I "description:stand-in for OpenWrt map" -F "$fm/data" -o "$fm/repo/map-8-r1.apk" >/dev/null
MAP_IPK=$fm/map_8-r1_all.ipk
is_ours() { cmp -s "$1/lib/netifd/proto/map.sh" compat/map/lib/netifd/proto/map.sh; }
is_theirs() { cmp -s "$1/lib/netifd/proto/map.sh" "$MAP_SH"; }
export MAP_SH=$fm/data/lib/netifd/proto/map.sh
export -f is_ours is_theirs

R=$W/opkg-map
$I ipk "$R" "$MAP_IPK" >/dev/null 2>&1
out=$(opkg_in "$R" install "$(ipk_of mape-rs)" "$(ipk_of mape-rs-map)" 2>&1)
check "opkg: mape-rs-map is refused while map is installed (Conflicts), map.sh untouched" \
	bash -c 'grep -q "The following packages conflict with mape-rs-map" <<<"$1" && ! grep -q "^mape-rs-map " <<<"$2"' _ "$out" "$(opkg_in "$R" list-installed)"
check "opkg: ... and map.sh is still map's" is_theirs "$R"
opkg_in "$R" remove map >/dev/null 2>&1
out=$(opkg_in "$R" install "$(ipk_of mape-rs-map)" 2>&1)
check "opkg: after 'opkg remove map', mape-rs-map installs and owns map.sh" \
	bash -c 'is_ours "$1" && grep -qx /lib/netifd/proto/map.sh "$1/usr/lib/opkg/info/mape-rs-map.list"' _ "$R"
out=$(opkg_in "$R" install "$MAP_IPK" 2>&1)
check "opkg: map is refused while mape-rs-map owns map.sh ('already provided by package mape-rs-map'), nothing overwritten" \
	bash -c 'grep -q "already provided by package .*mape-rs-map" <<<"$1" && ! grep -q "^map " <<<"$2"' _ "$out" "$(opkg_in "$R" list-installed)"
check "opkg: ... and map.sh is still ours" is_ours "$R"
opkg_in "$R" remove mape-rs-map >/dev/null 2>&1
check "opkg: opkg remove mape-rs-map removes map.sh" test ! -e "$R/lib/netifd/proto/map.sh"
# Control: why the package declares no Replaces. With Conflicts + Replaces, opkg-lede removes
# map itself, but map.sh then belongs to nobody (it is missing from mape-rs-map's file list),
# which the ownership check above catches.
rx=$W/replaces
mkdir -p "$rx/x/c"
(cd "$rx/x" && tar xzf "$(ipk_of mape-rs-map)" && tar xzf control.tar.gz -C c &&
	sed -i 's/^Conflicts: map$/&\nReplaces: map/' c/control && (cd c && tar --owner=0 --group=0 -czf ../control.tar.gz .) &&
	tar -czf "$rx/mape-rs-map_${V}_all.ipk" ./debian-binary ./data.tar.gz ./control.tar.gz)
R=$W/opkg-replaces
$I ipk "$R" "$MAP_IPK" >/dev/null 2>&1
$I ipk "$R" "$(ipk_of mape-rs)" "$rx/mape-rs-map_${V}_all.ipk" >/dev/null 2>&1
check "opkg control: with 'Replaces: map' added, opkg removes map but mape-rs-map's file list lacks map.sh" \
	bash -c '! grep -q "^map " <<<"$1" && is_ours "$2" && ! grep -qx /lib/netifd/proto/map.sh "$2/usr/lib/opkg/info/mape-rs-map.list"' \
	_ "$(opkg_in "$R" list-installed)" "$R"

# apk, from a repository holding map and our packages (as a router with OpenWrt's feeds and ours)
cp "$(apk_of mape-rs)" "$(apk_of mape-rs-map)" "$fm/repo/"
"$APK" mkndx --allow-untrusted --output "$fm/repo/packages.adb" "$fm/repo"/*.apk >/dev/null 2>&1
A=$W/apk-map
$I --repo "$fm/repo/packages.adb" apk "$A" map >/dev/null 2>&1
check "apk: map (stand-in) installed from the repository" is_theirs "$A"
out=$($I --repo "$fm/repo/packages.adb" apk "$A" mape-rs-map 2>&1)
check "apk: 'apk add mape-rs-map' replaces map (purged) and owns map.sh" \
	bash -c 'grep -q "Purging map (8-r1)" <<<"$1" && "$2" --root "$3" info --who-owns /lib/netifd/proto/map.sh | grep -q "owned by mape-rs-map-"' _ "$out" "$APK" "$A"
check "apk: ... map.sh is ours, map is no longer installed" bash -c 'is_ours "$1" && ! grep -q "^map-" <<<"$2"' _ "$A" "$(apk_in "$A" list --installed 2>/dev/null)"
$I --repo "$fm/repo/packages.adb" apk "$A" map >/dev/null 2>&1
check "apk: 'apk add map' afterwards changes nothing (mape-rs-map provides map), map.sh stays ours" \
	bash -c 'is_ours "$1" && ! grep -q "^map-" <<<"$2"' _ "$A" "$(apk_in "$A" list --installed 2>/dev/null)"
out=$("$APK" --root "$A" --no-network --no-scripts --allow-untrusted --repository "$fm/repo/packages.adb" del mape-rs-map 2>&1)
check "apk: 'apk del mape-rs-map' brings map back (still in the world) with its map.sh" \
	bash -c 'grep -q "Installing map (8-r1)" <<<"$1" && is_theirs "$2"' _ "$out" "$A"
A=$W/apk-map-files
$I apk "$A" "$fm/repo/map-8-r1.apk" >/dev/null 2>&1
out=$($I apk "$A" "$(apk_of mape-rs)" "$(apk_of mape-rs-map)" 2>&1)
check "apk: from files (the world pins map by hash) mape-rs-map is refused: 'conflicts: map', map.sh untouched" \
	bash -c '[ "$1" != 0 ] && grep -q "conflicts: map-8-r1" <<<"$2"' _ $? "$out"
check "apk: ... and map.sh is still map's" is_theirs "$A"
# Control: the replacement comes from the provide. Without it apk refuses to overwrite map's file.
np=$W/noprovide
mkdir -p "$np/files/lib/netifd/proto"
install -m 0755 compat/map/lib/netifd/proto/map.sh "$np/files/lib/netifd/proto/map.sh"
"$APK" mkpkg --no-xattrs -I name:mape-rs-map -I "version:$V" -I arch:noarch -I depends:mape-rs -I description:control \
	-F "$np/files" -o "$np/mape-rs-map-$V.apk" >/dev/null 2>&1
A=$W/apk-noprovide
$I apk "$A" "$fm/repo/map-8-r1.apk" >/dev/null 2>&1
out=$($I apk "$A" "$(apk_of mape-rs)" "$np/mape-rs-map-$V.apk" 2>&1)
check "apk control: without provides map, apk refuses: 'trying to overwrite lib/netifd/proto/map.sh owned by map'" \
	bash -c 'grep -q "trying to overwrite lib/netifd/proto/map.sh owned by map-8-r1" <<<"$1"' _ "$out"

# --- 5. opkg upgrade from the single-package layout ----------------------------------------
# Before the split mape-rs carried mape.js. That package, as version 0.0.9-r1:
old=$W/old
mkdir -p "$old/x/c" "$old/d"
(cd "$old/x" && tar xzf "$(ipk_of mape-rs)" && tar xzf control.tar.gz -C c && tar xzf data.tar.gz -C "$old/d" &&
	install -D -m 0644 "$ROOT/files/www/luci-static/resources/protocol/mape.js" "$old/d/www/luci-static/resources/protocol/mape.js" &&
	sed -i 's/^Version: .*/Version: 0.0.9-r1/' c/control && (cd c && tar --owner=0 --group=0 -czf ../control.tar.gz .) &&
	(cd "$old/d" && tar --owner=0 --group=0 -czf "$old/x/data.tar.gz" .) &&
	tar -czf "$old/mape-rs_0.0.9-r1_x86_64.ipk" ./debian-binary ./data.tar.gz ./control.tar.gz)
R=$W/opkg-upgrade
$I ipk "$R" "$old/mape-rs_0.0.9-r1_x86_64.ipk" >/dev/null 2>&1
out=$($I ipk "$R" "$(ipk_of mape-rs)" "$(ipk_of luci-proto-mape)" 2>&1)
check "opkg upgrade from the single package: 'opkg install mape-rs.ipk luci-proto-mape.ipk' works" test $? = 0
check "opkg upgrade: mape.js now belongs to luci-proto-mape, not to mape-rs" \
	bash -c 'grep -qx /www/luci-static/resources/protocol/mape.js "$1/usr/lib/opkg/info/luci-proto-mape.list" && ! grep -q mape.js "$1/usr/lib/opkg/info/mape-rs.list" && test -s "$1/www/luci-static/resources/protocol/mape.js"' _ "$R"

# --- 6. the feed ---------------------------------------------------------------------------
names=("${PKG_NAMES[@]}")
R=$W/opkg-feed
out=$($I --repo "file://$FEED" ipk "$R" "${names[@]}" 2>&1)
check "opkg feed (file://): opkg update + install ${names[*]}" test $? = 0
check "opkg feed (file://): installed $want_set" test "$(installed_opkg "$R")" = "$want_set"
bad_feed=$W/badfeed
cp -a "$FEED" "$bad_feed"
python3 - "$bad_feed/Packages" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
# mape-rs's SHA256sum, one hex digit changed
s = re.sub(r"(Package: mape-rs\n(?:.+\n)*?SHA256sum: )(.)", lambda m: m.group(1) + ("0" if m.group(2) != "0" else "1"), s, count=1)
open(p, "w").write(s)
EOF
gzip -9n <"$bad_feed/Packages" >"$bad_feed/Packages.gz"
out=$($I --repo "file://$bad_feed" ipk "$W/opkg-badfeed" mape-rs 2>&1)
check "opkg feed control: a wrong SHA256sum in Packages is refused (checksum mismatch)" \
	bash -c '[ "$1" != 0 ] && grep -qi "checksum or size mismatch" <<<"$2" && [ ! -e "$3/usr/sbin/mape" ]' _ $? "$out" "$W/opkg-badfeed"
A=$W/apk-feed
out=$($I --repo "$FEED/packages.adb" apk "$A" "${names[@]}" 2>&1)
check "apk repository (path): apk add ${names[*]}" test $? = 0
check "apk repository (path): installed $want_apk_set" test "$(installed_apk "$A")" = "$want_apk_set"

# over HTTP: python3's http.server serving dist/
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$ROOT/dist" "$port" >"$W/http.log" 2>&1 &
server=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/feed/x86_64/Packages" >/dev/null 2>&1 && break; sleep 0.1; done
R=$W/opkg-http
out=$($I --repo "http://127.0.0.1:$port/feed/x86_64" ipk "$R" "${names[@]}" 2>&1)
check "opkg feed (HTTP, src/gz): update + install ${names[*]}" \
	bash -c '[ "$1" = 0 ] && [ "$2" = "$3" ]' _ $? "$(installed_opkg "$R")" "$want_set"
A=$W/apk-http
out=$($I --repo "http://127.0.0.1:$port/feed/x86_64/packages.adb" apk "$A" "${names[@]}" 2>&1)
check "apk repository (HTTP): apk add ${names[*]}" \
	bash -c '[ "$1" = 0 ] && [ "$2" = "$3" ]' _ $? "$(installed_apk "$A")" "$want_apk_set"
check "HTTP feed: the server saw the downloads (Packages.gz, packages.adb, .ipk, .apk)" \
	bash -c 'grep -q "GET /feed/x86_64/Packages.gz" "$1" && grep -q "GET /feed/x86_64/packages.adb" "$1" && grep -q "GET /feed/x86_64/mape-rs_.*\.ipk" "$1" && grep -q "GET /feed/x86_64/mape-rs-.*\.apk" "$1"' _ "$W/http.log"

# --- 7. maintainer scripts, run by the package managers --------------------------------------
copy_with_libs() { # <binary> <chroot> <path in it>: the binary and the libraries ldd names
	local l
	install -D "$1" "$2$3"
	ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r l; do
		[ -f "$l" ] && [ ! -e "$2$l" ] && install -D "$l" "$2$l"
	done
}
mkchroot() { # <dir>: busybox (with its libraries), /dev/null, /proc (pidof), logging stand-ins for ubus and uci
	local c=$1
	[ -n "$c" ] && [ "$c" != / ] || return 1
	mkdir -p "$c/bin" "$c/usr/bin" "$c/sbin" "$c/tmp" "$c/etc" "$c/var/lock" "$c/dev" "$c/proc"
	copy_with_libs /bin/busybox "$c" /bin/busybox
	chroot "$c" /bin/busybox --install -s /bin
	mknod -m 666 "$c/dev/null" c 1 3
	mount -t proc proc "$c/proc" && mounts+=("$c/proc")
	cp tests/pkg/stub-ubus "$c/usr/bin/ubus"
	cp tests/pkg/stub-uci "$c/sbin/uci"
	chmod 0755 "$c/usr/bin/ubus" "$c/sbin/uci"
}
wait_for() { # <file> <text>: up to 10 s
	local i
	for i in $(seq 50); do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
	return 1
}
check_scripts_ran() { # <chroot> <package manager>
	local c=$1 pm=$2 log=$1/tmp/calls.log
	check "$pm scripts: mape-rs's uci-defaults (found in its file list) registered the fw4 include, then was deleted" \
		bash -c 'grep -qx "uci batch: set firewall.mape_rs=include" "$1" && grep -q "uci batch: set firewall.mape_rs.path=.*/usr/share/mape-rs/fw4-include.sh" "$1" && [ ! -e "$2/etc/uci-defaults/90-mape-rs" ]' _ "$log" "$c"
	check "$pm scripts: luci-i18n-mape-ja added Japanese to LuCI's languages" \
		bash -c 'grep -qx "uci set luci.languages.ja=日本語 (Japanese)" "$1" && [ ! -e "$2/etc/uci-defaults/luci-i18n-mape-ja" ]' _ "$log" "$c"
	check "$pm scripts: the postinst asked netifd for its handlers twice (proto mape, proto map)" \
		test "$(grep -c "call network get_proto_handlers" "$log")" = 2
	wait_for "$log" "call network restart"
	sleep 1
	check "$pm scripts: one 'ubus call network restart' for mape-rs and mape-rs-map together" \
		test "$(grep -c "call network restart" "$log")" = 1
}
mapfile -t ipk_set < <(for n in mape-rs luci-proto-mape luci-i18n-mape-ja mape-rs-map; do ipk_of "$n"; done)
mapfile -t apk_set < <(for n in mape-rs luci-proto-mape luci-i18n-mape-ja mape-rs-map; do apk_of "$n"; done)

C=$W/chroot-apk
mkchroot "$C"
out=$($I --scripts apk "$C" "${apk_set[@]}" 2>&1)
check "apk scripts: apk add runs every post-install in the chroot (exit 0, no script error)" \
	bash -c '[ "$1" = 0 ] && grep -q "Executing mape-rs-$2.post-install" <<<"$3" && grep -q "Executing luci-i18n-mape-ja-$2.post-install" <<<"$3" && ! grep -qi "script exited with error" <<<"$3"' \
	_ $? "$V" "$out"
check_scripts_ran "$C" apk
: >"$C/tmp/calls.log"
out=$("$APK" --root "$C" --no-network --allow-untrusted del mape-rs-map luci-i18n-mape-ja luci-proto-mape mape-rs 2>&1)
check "apk scripts: apk del runs pre-deinstall: the fw4 include is removed, by mape-rs's alone" \
	bash -c 'grep -q "Executing mape-rs-$1.pre-deinstall" <<<"$2" && [ "$(grep -c "uci -q delete firewall.mape_rs" "$3")" = 1 ] && grep -qx "uci -q commit firewall" "$3"' _ "$V" "$out" "$C/tmp/calls.log"

# opkg runs scripts only in a live root: run it inside the chroot.
C=$W/chroot-opkg
mkchroot "$C"
copy_with_libs "$(readlink -f "$OPKG")" "$C" /usr/bin/opkg
install -D -m 0644 tests/pkg/functions.sh "$C/lib/functions.sh"
mkdir -p "$C/tmp/pkgs" "$C/usr/lib/opkg/info"
printf 'dest root /\nlists_dir ext /var/opkg-lists\narch all 1\narch x86_64 10\n' >"$C/etc/opkg.conf"
for s in kmod-ip6-tunnel kmod-nft-nat nftables ubus luci-base; do
	printf 'Package: %s\nVersion: 0-standin\nStatus: install user installed\nArchitecture: all\nInstalled-Time: 0\n\n' "$s" >>"$C/usr/lib/opkg/status"
	: >"$C/usr/lib/opkg/info/$s.list"
done
cp "${ipk_set[@]}" "$C/tmp/pkgs/"
inside=()
for f in "${ipk_set[@]}"; do inside+=("/tmp/pkgs/$(basename "$f")"); done
out=$(chroot "$C" /usr/bin/opkg -f /etc/opkg.conf install "${inside[@]}" 2>&1)
check "opkg scripts: opkg install in the chroot configures the four packages (exit 0, no errors)" \
	bash -c '[ "$1" = 0 ] && grep -q "Configuring luci-i18n-mape-ja" <<<"$2" && ! grep -q "Collected errors" <<<"$2"' _ $? "$out"
check_scripts_ran "$C" opkg
: >"$C/tmp/calls.log"
out=$(chroot "$C" /usr/bin/opkg -f /etc/opkg.conf remove mape-rs-map luci-i18n-mape-ja luci-proto-mape mape-rs 2>&1)
check "opkg scripts: opkg remove runs prerm: the fw4 include is removed, by mape-rs's alone" \
	bash -c '[ "$(grep -c "uci -q delete firewall.mape_rs" "$1")" = 1 ] && grep -qx "uci -q commit firewall" "$1" && grep -q "removed firewall include" <<<"$2"' _ "$C/tmp/calls.log" "$out"
finish
