# Stand-in for an OpenWrt SDK's include/package.mk, enough to run a package Makefile's own
# parts: Build/Prepare, each Package/<name>/install into $(OUT)/<name>, and each package's
# metadata (DEPENDS, PKGARCH, CONFLICTS, PROVIDES) and scripts (postinst, prerm) written to
# $(OUT)/<name>.meta and, when the Makefile defines them, $(OUT)/<name>.{postinst,prerm}. Not OpenWrt's logic: only the variables and install
# macros OpenWrt defines with the same names and meaning.
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
CP:=cp -fpR
PKG_BUILD_DIR:=$(OUT)/build/$(PKG_NAME)
PKG_INSTALL_DIR:=$(PKG_BUILD_DIR)/.pkgdir

.PHONY: all prepare
all:

prepare:
	rm -rf $(PKG_BUILD_DIR)
	$(Build/Prepare)
	mkdir -p $(PKG_INSTALL_DIR)/bin
	cp $(FAKE_BIN) $(PKG_INSTALL_DIR)/bin/mape

define BuildPackage
$(eval DEPENDS:=)
$(eval PKGARCH:=)
$(eval CONFLICTS:=)
$(eval PROVIDES:=)
$(eval $(Package/$(1)))
$(file >$(OUT)/$(1).meta,DEPENDS=$(strip $(DEPENDS))|PKGARCH=$(PKGARCH)|CONFLICTS=$(CONFLICTS)|PROVIDES=$(PROVIDES))
$(if $(Package/$(1)/postinst),$(file >$(OUT)/$(1).postinst,$(Package/$(1)/postinst)))
$(if $(Package/$(1)/prerm),$(file >$(OUT)/$(1).prerm,$(Package/$(1)/prerm)))
all: install-$(1)
install-$(1): prepare
	rm -rf $(OUT)/$(1) && mkdir -p $(OUT)/$(1)
	$(call Package/$(1)/install,$(OUT)/$(1))
endef
