package status

import (
	"bytes"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	s := &Status{
		Version: "v1.0.0", Config: "/etc/pxresp/config.yaml", Ready: true,
		Datapath: "ebpf", DatapathReason: "requested",
		Rules: []Rule{{Name: "calico", Interfaces: []string{"cali*"}, Answers: "gateway mode: gateways [169.254.1.1] targets []"}},
		Interfaces: []Interface{
			{Name: "lo", Index: 1, State: Skipped, Reason: "loopback"},
			{Name: "cali1", Index: 5, State: Attached, Rule: "calico", Datapath: "ebpf",
				Counters: &Counters{Requests: 12, Replies: 10, Ignored: 2},
				Problems: []Problem{{Check: "rp_filter", Message: "cali1: rp_filter=1 drops the pod's packets"}}},
			{Name: "cali2", Index: 6, State: Skipped, Reason: "has a master (bridge, bond or VRF port)"},
			{Name: "cali3", Index: 7, State: Failed, Rule: "calico", Reason: "attach: operation not permitted"},
		},
	}
	var b bytes.Buffer
	if err := Write(&b, s); err != nil {
		t.Fatal(err)
	}
	want := `pxresp v1.0.0, ready, config /etc/pxresp/config.yaml, datapath ebpf (requested)

RULE    INTERFACES  ANSWERS
calico  cali*       gateway mode: gateways [169.254.1.1] targets []

INTERFACE  INDEX  STATE     RULE    DATAPATH  REQUESTS  REPLIES  IGNORED  RATE-LIMITED  WHY
lo         1      skipped   -       -         -         -        -        -             loopback
cali1      5      attached  calico  ebpf      12        10       2        0             -
cali2      6      skipped   -       -         -         -        -        -             has a master (bridge, bond or VRF port)
cali3      7      failed    calico  -         -         -        -        -             attach: operation not permitted

INTERFACE  SYSCTL     PROBLEM
cali1      rp_filter  cali1: rp_filter=1 drops the pod's packets
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if strings.Contains(b.String(), "\t") {
		t.Error("tabs in the table")
	}
}
