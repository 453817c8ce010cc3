package daemon

import (
	"fmt"
	"testing"

	"github.com/pxresp/pxresp/internal/config"
)

func TestDiffRules(t *testing.T) {
	parse := func(y string) *config.Config {
		t.Helper()
		c, err := config.Parse("test.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	prev := parse(`rules:
- {name: calico, interfaces: ["cali*"], gateways: [169.254.1.1]}
- {name: taps, interfaces: ["tap*"], mode: route}
- {name: old, interfaces: ["old*"], gateways: [169.254.1.1]}
`)
	for _, tt := range []struct {
		name, next string
		want       string // added removed changed
	}{
		{"same", `rules:
- {name: calico, interfaces: ["cali*"], gateways: [169.254.1.1]}
- {name: taps, interfaces: ["tap*"], mode: route}
- {name: old, interfaces: ["old*"], gateways: [169.254.1.1]}
`, "[] [] []"},
		{"added, removed, new gateway, new glob", `rules:
- {name: calico, interfaces: ["cali*"], gateways: [169.254.1.2]}
- {name: taps, interfaces: ["tap*", "tun*"], mode: route}
- {name: new, interfaces: ["new*"], gateways: [169.254.1.1]}
`, "[new] [old] [calico taps]"},
		{"new MAC, reordered", `rules:
- {name: taps, interfaces: ["tap*"], mode: route, mac: "02:00:00:00:00:aa"}
- {name: calico, interfaces: ["cali*"], gateways: [169.254.1.1]}
- {name: old, interfaces: ["old*"], gateways: [169.254.1.1]}
`, "[] [] [taps calico]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, r, c := diffRules(prev, parse(tt.next))
			if got := fmt.Sprint(a, " ", r, " ", c); got != tt.want {
				t.Errorf("added removed changed = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestDiffNames(t *testing.T) {
	in, out := diffNames([]string{"cali1", "cali2", "cali3"}, []string{"cali2", "cali4"})
	if fmt.Sprint(in, out) != "[cali4] [cali1 cali3]" {
		t.Errorf("attached %v detached %v", in, out)
	}
}
