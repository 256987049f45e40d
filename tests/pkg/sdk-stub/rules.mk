# Stand-in for an OpenWrt SDK's rules.mk (tests/pkg/sdk-stub/README): just the paths.
INCLUDE_DIR:=$(TOPDIR)/include
