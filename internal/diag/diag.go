// Package diag reads the IPv4 sysctls of an interface that pxresp serves and
// explains the settings that defeat it. It only reads: pxresp never writes a
// sysctl.
//
// It reads net/ipv4/conf/{all,IFNAME}/{proxy_arp,forwarding,rp_filter}
// under /proc/sys and combines them the way the kernel does
// (include/linux/inetdevice.h):
//
//	proxy_arp   IN_DEV_PROXY_ARP = all || IFNAME    (IN_DEV_ORCONF)
//	forwarding  IN_DEV_FORWARD   = IFNAME alone     (all only propagates on write)
//	rp_filter   IN_DEV_RPFILTER  = max(all, IFNAME) (IN_DEV_MAXCONF; 1 strict, 2 loose)
//
// Reverse-path filtering accepts a packet whose source is routed back out
// of the interface it came in on. Otherwise strict mode drops it, and so
// does loose mode on an interface without an IPv4 address (a cali
// interface): __fib_validate_source in net/ipv4/fib_frontend.c goes to
// last_resort, which drops for any rp_filter but 0.
//
// /proc/sys/net shows the network namespace of the thread that reads it, so
// Check must run on a thread in the namespace of the interface.
package diag

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// The checks, as in Finding.Check.
const (
	ProxyARP   = "proxy_arp"
	Forwarding = "forwarding"
	RPFilter   = "rp_filter"
)

// Checks are every Finding.Check, in order.
var Checks = []string{ProxyARP, Forwarding, RPFilter}

// Finding is one setting that works against pxresp on an interface.
type Finding struct {
	// Check is ProxyARP, Forwarding or RPFilter.
	Check string
	// Message names the interface, the sysctl values, the consequence and
	// the fix.
	Message string
}

func (f Finding) String() string { return f.Check + ": " + f.Message }

// Root is where Check reads the sysctls.
const Root = "/proc/sys"

// Check reads the sysctls of interface ifname in the network namespace of
// the calling thread and returns what is wrong, if anything. hasRoute says
// whether the host has a route to the pod out of ifname (the pod's /32
// route): without one, strict reverse-path filtering drops the pod's
// packets. An interface that has no sysctl directory (it is gone, or in
// another namespace) is an error naming it.
func Check(ifname string, hasRoute bool) ([]Finding, error) {
	return check(os.DirFS(Root), Root+"/", ifname, hasRoute)
}

// CheckFS is Check reading fsys, a file system laid out like /proc/sys
// (fsys holds "net/ipv4/conf/all/proxy_arp", ...).
func CheckFS(fsys fs.FS, ifname string, hasRoute bool) ([]Finding, error) {
	return check(fsys, "", ifname, hasRoute)
}

const confDir = "net/ipv4/conf/"

// values are one directory's sysctls.
type values struct{ proxyARP, forwarding, rpFilter int }

func check(fsys fs.FS, root, ifname string, hasRoute bool) ([]Finding, error) {
	if err := validName(ifname); err != nil {
		return nil, err
	}
	dev, err := read(fsys, root, ifname)
	if err != nil {
		return nil, err
	}
	all, err := read(fsys, root, "all")
	if err != nil {
		return nil, err
	}
	key := func(dir, name string) string { return "net.ipv4.conf." + dir + "." + name }
	// sysctl(8) uses "/" in a key for an interface name with a dot.
	if strings.Contains(ifname, ".") {
		key = func(dir, name string) string { return "net/ipv4/conf/" + dir + "/" + name }
	}
	kv := func(dir, name string, v int) string { return fmt.Sprintf("%s=%d", key(dir, name), v) }

	var out []Finding
	if dev.proxyARP != 0 || all.proxyARP != 0 {
		out = append(out, Finding{ProxyARP, fmt.Sprintf(
			"%s: the kernel's proxy ARP is on too (%s, %s; the kernel ORs them): "+
				"the kernel and pxresp both answer, so pods get double replies; "+
				"set %s=0 and %s=0, or stop pxresp on %s",
			ifname, kv(ifname, ProxyARP, dev.proxyARP), kv("all", ProxyARP, all.proxyARP),
			key(ifname, ProxyARP), key("all", ProxyARP), ifname)})
	}
	if dev.forwarding == 0 {
		out = append(out, Finding{Forwarding, fmt.Sprintf(
			"%s: forwarding is off (%s; the kernel uses the interface's own value, whatever %s and net.ipv4.ip_forward say): "+
				"the kernel will not route the pod's traffic that arrives on %s, whatever pxresp answers; set %s=1",
			ifname, kv(ifname, Forwarding, dev.forwarding), key("all", Forwarding), ifname, key(ifname, Forwarding))})
	}
	if rpf := max(dev.rpFilter, all.rpFilter); rpf != 0 && !hasRoute {
		mode := "strict"
		drop := "the kernel drops the pod's packets"
		if rpf != 1 {
			mode = "loose"
			drop = "on an interface without an IPv4 address, as Calico's are, the kernel drops the pod's packets"
		}
		out = append(out, Finding{RPFilter, fmt.Sprintf(
			"%s: reverse-path filtering is %s (%s, %s; the kernel uses the larger) and the host has no route to the pod out of %s: "+
				"%s until its /32 route exists; add the route (ip route add POD-IP/32 dev %s scope link), or set %s=0 and %s=0",
			ifname, mode, kv(ifname, RPFilter, dev.rpFilter), kv("all", RPFilter, all.rpFilter), ifname,
			drop, ifname, key(ifname, RPFilter), key("all", RPFilter))})
	}
	return out, nil
}

// validName accepts what the kernel accepts as an interface name
// (dev_valid_name) and refuses the two directories that are not interfaces.
func validName(ifname string) error {
	switch {
	case ifname == "" || len(ifname) > 15 || ifname == "." || ifname == ".." ||
		strings.ContainsAny(ifname, "/: \t\n\v\f\r"):
		return fmt.Errorf("diag: %q is not an interface name", ifname)
	case ifname == "all" || ifname == "default":
		return fmt.Errorf("diag: %q is not an interface but a sysctl directory", ifname)
	}
	return nil
}

// read reads the three sysctls of net/ipv4/conf/dir.
func read(fsys fs.FS, root, dir string) (values, error) {
	d := confDir + dir
	what := "interface " + dir
	if dir == "all" {
		what = root + d
	}
	if _, err := fs.Stat(fsys, d); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if dir == "all" {
				return values{}, fmt.Errorf("diag: %s%s not found: not a /proc/sys with IPv4", root, d)
			}
			return values{}, fmt.Errorf("diag: interface %s: %s%s not found (no such interface in this network namespace, or no IPv4 on it)", dir, root, d)
		}
		return values{}, fmt.Errorf("diag: %s: %w", what, err)
	}
	var v values
	for _, s := range []struct {
		name string
		to   *int
	}{{ProxyARP, &v.proxyARP}, {Forwarding, &v.forwarding}, {RPFilter, &v.rpFilter}} {
		p := d + "/" + s.name
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return values{}, fmt.Errorf("diag: %s: %w", what, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return values{}, fmt.Errorf("diag: %s%s: %q is not a number", root, p, strings.TrimSpace(string(b)))
		}
		*s.to = n
	}
	return v, nil
}
