# Stand-in for the packages feed's lang/rust/rust-package.mk: the names our Makefile uses.
RUST_ARCH_DEPENDS:=
define RustBinPackage
endef
