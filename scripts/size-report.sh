#!/usr/bin/env bash
# What each part of the router binary costs: by crate, by mape module, the largest symbols
# (method and limits: docs/sizes.md). Measures the shipped build itself: scripts/dist.sh links
# the binary unstripped, keeps that copy in dist/symbols/<arch>/mape and ships it stripped.
#
# Usage: scripts/size-report.sh [--no-build] [<openwrt-arch>]   (default mipsel_24kc)
#   --no-build   use what scripts/dist.sh left in dist/ (else it runs `scripts/dist.sh <arch>`)
# Prints Markdown (the tables of docs/sizes.md) and writes it to dist/SIZE-REPORT-<arch>.md.
# Env: SIZE_REPORT_TOP (largest symbols listed, default 40); scripts/dist.sh's own variables.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

build=1
if [ "${1:-}" = --no-build ]; then
	build=0
	shift
fi
arch=${1:-mipsel_24kc}
[ $# -le 1 ] || { echo "usage: scripts/size-report.sh [--no-build] [<openwrt-arch>]" >&2; exit 2; }

if [ "$build" = 1 ]; then
	scripts/dist.sh "$arch" >&2
fi
elf=dist/symbols/$arch/mape
bin=dist/bin/$arch/mape
[ -f "$elf" ] || { echo "size-report.sh: no $elf: run scripts/dist.sh $arch (it keeps the unstripped binary when llvm-tools is installed)" >&2; exit 1; }
sysroot=$(rustc --print sysroot)
nm="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-nm"
[ -x "$nm" ] || { echo "size-report.sh: no llvm-nm: rustup component add llvm-tools" >&2; exit 1; }
ipk=$(ls dist/mape-rs_*_"$arch".ipk 2>/dev/null | head -1 || true)
out=dist/SIZE-REPORT-$arch.md
{
	echo "# Size report: $arch ($(git describe --always --dirty 2>/dev/null || echo unknown), rustc $(rustc -V | cut -d' ' -f2))"
	echo
	python3 scripts/size_report.py --nm "$nm" --elf "$elf" --stripped "$bin" ${ipk:+--ipk "$ipk"} \
		--top "${SIZE_REPORT_TOP:-40}"
} >"$out"
cat "$out"
