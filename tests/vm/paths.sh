# Sourced by the VM scripts. The guest sees the host's root read-only, except /tmp, /run and
# /var, which it replaces by empty tmpfs: anything the guest must read (the kernel's modules,
# the scripts, the mape binary) has to live elsewhere. A checkout under one of those (a CI clone
# in /tmp, say) is staged under $HOME/.cache/mape-rs instead.

# True when PATH is hidden from the guest.
vm_hidden() { case $1/ in /tmp/* | /run/* | /var/*) return 0 ;; *) return 1 ;; esac; }

# The kernel cache: tests/vm/cache, or $HOME/.cache/mape-rs/vm when the checkout is hidden.
vm_cache_default() {
	if vm_hidden "$1"; then echo "${HOME:-/root}/.cache/mape-rs/vm"; else echo "$1/cache"; fi
}

# Copies DIR to a place the guest can see and prints the new path (DIR itself if visible).
vm_stage_dir() {
	vm_hidden "$1" || { echo "$1"; return; }
	local stage=${MAPE_VM_STAGE:-${HOME:-/root}/.cache/mape-rs/stage}/$(echo "$1" | md5sum | cut -c1-12)
	rm -rf "$stage" && mkdir -p "$stage" && cp -a "$1/." "$stage/" && echo "$stage"
}
