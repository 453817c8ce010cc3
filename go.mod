module github.com/pxresp/pxresp

go 1.26.0

require (
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/mdlayher/arp v0.0.0-20220512170110-6706a2966875
	github.com/mdlayher/ethernet v0.0.0-20220221185849-529eae5b6118
	github.com/vishvananda/netlink v1.3.1
)

require (
	github.com/mdlayher/packet v1.2.0
	github.com/mdlayher/socket v0.8.0 // indirect
	github.com/vishvananda/netns v0.0.5
	golang.org/x/sync v0.24.0 // indirect
)
