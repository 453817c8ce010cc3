// Package config reads pxresp's rules, from a YAML file (Load, Parse) or
// built in code from the command line (New): each rule says which
// interfaces to serve (path.Match globs, the first matching rule wins) and
// what to answer on them, and compiles to a policy.Policy. A Config is
// validated as a whole: a bad value or a conflict is an error naming the
// file, the line and the key. CheckGlob, ParseAddr and ParsePrefix are the
// checks of globs, gateways and targets that the command line uses too.
//
// # The file
//
//	rules:
//	  - name: calico                # optional, unique; used in logs
//	    interfaces: ["cali*"]       # required: path.Match globs
//	    mode: gateway               # gateway (default) or route
//	    gateways: [169.254.1.1]     # gateway mode only
//	    targets: [10.244.0.0/16]    # gateway mode: answered too; route mode: limits what is answered
//	    mac: ee:ee:ee:ee:ee:ee      # optional: answer with this MAC instead of the interface's
//	  - name: lan
//	    interfaces: [veth-a]
//	    proxy: [192.168.1.20]       # like `ip neigh add proxy 192.168.1.20 dev veth-a`
//
// An interface is served by the first rule, in file order, whose globs
// match its name. A rule that an earlier one shadows for sure (the same
// glob, or an exact name an earlier glob matches) is a conflict and is
// rejected, as are unknown keys and bad values. Every error names the file,
// the line and the key. The size of a file, the number of rules, globs and
// list items are bounded, so that no input makes parsing slow.
package config
