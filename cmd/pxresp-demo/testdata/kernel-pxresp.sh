#!/bin/sh
# A stand-in for pxresp in pxresp-demo's tests: the kernel's proxy ARP
# answers instead. It must run in the namespace pxresp would run in (the demo
# starts it with `ip netns exec NS`), where it turns on proxy_arp with
# proxy_delay 0 on each interface matching --iface (default cali*) once it is
# up, and logs attach/detach lines like pxresp's. The kernel's proxy_arp is
# what pxresp's --mode route does; --config is not understood. Stops on
# SIGTERM, or by itself after 60 s.
set -u
echo "level=INFO msg=start stand-in=kernel-proxy-arp args=\"$*\""
glob='cali*'
prev=
for a in "$@"; do
	case "$prev" in --iface | -iface) glob=$a ;; esac
	case "$a" in --iface=* | -iface=*) glob=${a#*=} ;; esac
	prev=$a
done
stop=0
trap 'stop=1' TERM INT
known=" "
i=0
while [ "$stop" = 0 ] && [ "$i" -lt 1200 ]; do
	now=" "
	# $glob unquoted: the shell expands it.
	for path in /sys/class/net/$glob; do
		[ -e "$path" ] || continue
		ifc=${path##*/}
		case "$known" in
		*" $ifc "*) now="$now$ifc " ;;
		*)
			# Like pxresp, attach once the link is up (here: with carrier,
			# which comes after topo has written proxy_arp=0).
			[ "$(cat "$path/operstate" 2>/dev/null)" = up ] || continue
			if sysctl -qw "net.ipv4.conf.$ifc.proxy_arp=1" "net.ipv4.neigh.$ifc.proxy_delay=0" 2>/dev/null; then
				echo "level=INFO msg=attach iface=$ifc mac=$(cat "$path/address")"
				now="$now$ifc "
			fi
			;;
		esac
	done
	for ifc in $known; do
		case "$now" in
		*" $ifc "*) ;;
		*) echo "level=INFO msg=detach iface=$ifc" ;;
		esac
	done
	known=$now
	sleep 0.05
	i=$((i + 1))
done
echo "level=INFO msg=stopped"
