#!/usr/bin/env bash
# Runs every shell block of README.md (and README.ja.md) marked as runnable (```sh runnable), in
# order, as written, from the checkout: the README's commands must work on a fresh Debian 12
# with Rust. `cargo install` goes to a scratch root put first on PATH, so the machine's own
# ~/.cargo/bin is left alone. Prints one line per block and `N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
SCRATCH=$(mktemp -d /tmp/mape-readme.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
export CARGO_INSTALL_ROOT=$SCRATCH/root PATH=$SCRATCH/root/bin:$PATH
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
pass=0 fail=0
# The README is a front door: at most 12 KB; details live in docs/.
size=$(wc -c <README.md)
if [ "$size" -le 12288 ]; then echo "ok README.md is $size bytes (<= 12 KB)"; pass=$((pass + 1)); else
	echo "FAIL README.md is $size bytes (> 12 KB): move details to docs/"; fail=$((fail + 1)); fi
for doc in README.md README.ja.md; do
	[ -f "$doc" ] || continue
	# Split the runnable blocks into numbered scripts.
	python3 - "$doc" "$SCRATCH" <<'PY'
import re, sys
doc, out = sys.argv[1], sys.argv[2]
text = open(doc, encoding="utf-8").read()
blocks = re.findall(r"^```sh runnable\n(.*?)^```", text, re.S | re.M)
for i, b in enumerate(blocks):
    open(f"{out}/{doc}.{i:02d}.sh", "w").write(b)
print(len(blocks), file=open(f"{out}/{doc}.count", "w"))
PY
	n=$(cat "$SCRATCH/$doc.count")
	[ "$n" -gt 0 ] || { echo "FAIL $doc: no runnable block"; fail=$((fail + 1)); continue; }
	for f in "$SCRATCH/$doc".*.sh; do
		name="$doc block $(basename "$f" .sh | sed 's/.*\.//')"
		if out=$(bash -euo pipefail "$f" 2>&1); then
			echo "ok $name ($(wc -l <"$f") commands)"
			pass=$((pass + 1))
		else
			echo "FAIL $name: $(echo "$out" | tail -3 | tr '\n' ' ')"
			fail=$((fail + 1))
		fi
	done
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
