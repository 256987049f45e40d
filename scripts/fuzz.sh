#!/usr/bin/env bash
# Fuzzes every parser target of fuzz/ (cargo-fuzz, libFuzzer) for a bounded time each.
#
# Usage: scripts/fuzz.sh [SECONDS]      (default 20 seconds per target)
#
# Installs cargo-fuzz when it is missing. Uses a nightly toolchain when rustup has one, else the
# stable one with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs the unstable -Z sanitizer flags).
# Corpora and crash artifacts go to fuzz/corpus and fuzz/artifacts, both kept out of git; each
# corpus is seeded with the test vectors so the fuzzer starts from inputs that parse.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# Seeds (written fresh each run; the corpus directories are not in git).
seed() { # seed TARGET NAME TEXT
    mkdir -p "fuzz/corpus/$1"
    printf '%s' "$3" >"fuzz/corpus/$1/seed-$2"
}
seed_hex() { # seed_hex TARGET NAME HEX
    mkdir -p "fuzz/corpus/$1"
    local hex="${3//[ :]/}" i out=""
    for ((i = 0; i < ${#hex}; i += 2)); do out+="\\x${hex:i:2}"; done
    printf '%b' "$out" >"fuzz/corpus/$1/seed-$2"
}
v6plus='type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,psidlen=8,offset=4,br=2404:9200:225:100::64'
seed rule_string v6plus "$v6plus"
seed rule_string v6plus-psid "$v6plus,psid=25600"
seed rule_string odhcp6c 'fmr,type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1, type=map-e,ealen=0,prefix4len=32,prefix6len=56,ipv4prefix=192.0.2.18,ipv6prefix=2001:db8:12:3400::,offset=6,psidlen=8,psid=0x3400,'
seed rule_string fixed 'type=map-e,ipv6prefix=240b:10:3251:6400::,prefix6len=56,ipv4prefix=192.0.2.1,prefix4len=32,ealen=0'
example1='005e002d 00590015 011018c0000200282001 0db800 005d0004 06000000 005a0010 20010db8ffff0000 0000000000000001'
seed_hex dhcpv6_option94 example1 "$example1"
seed dhcpv6_option94 example1-hex "$example1"
seed_hex dhcpv6_option94 example5 '005e002f 00590017 0000 20 c0000212 38 20010db8001234 005d0004 06083400 005a0010 20010db8ffff0000 0000000000000001'
for p in 240b:12:3456:7800:a:100:2000:3000 240b:10:3f6c:d4ab::/64 2400:4050:1234:5600::/56 \
    2400:4151:e3ab:cd00::/56 2404:7a82:123:4500::/56 240d:f:1234:5600::/56 240d:f:4000::/60 \
    2001:db8:12:3400::/56; do
    seed prefix_arg "${p//[:\/]/_}" "$p"
done

echo "== building the fuzz targets (${fuzz[*]})"
"${fuzz[@]}" build
failed=()
for target in $("${fuzz[@]}" list); do
    echo "== $target: ${secs}s"
    if ! "${fuzz[@]}" run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1; then
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${secs}s without a crash"
