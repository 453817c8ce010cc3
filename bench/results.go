package main

// Results is everything one run measured; it is written as JSON and
// rendered as Markdown. Durations are in nanoseconds unless named otherwise.
type Results struct {
	Date        string        `json:"date"`
	Started     string        `json:"started"`
	DurationSec float64       `json:"duration_s"`
	Machine     Machine       `json:"machine"`
	Config      Config        `json:"config"`
	Latency     []*Series     `json:"latency"` // single pod, and scale (1000 interfaces)
	Flood       []*FloodRun   `json:"flood"`
	Storm       []*StormRun   `json:"storm,omitempty"`
	Idle        *IdleResult   `json:"idle,omitempty"`
	Memory      []MemPoint    `json:"memory"`
	Attach      *AttachResult `json:"attach,omitempty"`      // P
	AttachE     *AttachResult `json:"attach_ebpf,omitempty"` // E
	Burst       *BurstResult  `json:"burst,omitempty"`
	Errors      []string      `json:"errors,omitempty"` // sections that failed or were cut short
	Notes       []string      `json:"notes"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc      int    `json:"nproc"`
	CPUModel   string `json:"cpu_model"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go_version"`        // of the bench
	PxrespGo   string `json:"pxresp_go_version"` // `go version BIN`
	PxrespBin  string `json:"pxresp_bin"`
	ProxyDelay int    `json:"kernel_default_proxy_delay"` // proxy_delay of a new interface, 1/100 s
	CLKTck     int    `json:"clk_tck"`
}

// Config is the run's parameters (the flags after --quick).
type Config struct {
	Quick        bool    `json:"quick"`
	Sections     string  `json:"sections"`
	Rounds       int     `json:"rounds"`
	Samples      int     `json:"samples_per_round"`
	KdSamples    int     `json:"kd_broadcast_samples_per_mode"`
	Timeout      string  `json:"reply_timeout"`
	FloodRounds  int     `json:"flood_rounds"`
	FloodDur     string  `json:"flood_duration"`
	FloodRate    float64 `json:"flood_fixed_rate"`
	FloodMax     int64   `json:"flood_max_requests"`
	StormRounds  int     `json:"storm_rounds"`
	StormPods    int     `json:"storm_pods"`
	StormProbes  int     `json:"storm_probes"`
	IdleDur      string  `json:"idle_duration"`
	IdleIfaces   int     `json:"idle_interfaces"`
	AttachReps   int     `json:"attach_reps"`
	AttachPeriod string  `json:"attach_send_period"`
	Burst        int     `json:"burst_interfaces"`
	ScaleSample  int     `json:"scale_sampled_interfaces"`
	ScaleRounds  int     `json:"scale_rounds"`
	ScaleSamples int     `json:"scale_samples_per_round"`
}

// Series is the round trips of one responder, request kind and pinning.
type Series struct {
	Scope     string    `json:"scope"` // "pod" (one pod) or "scale" (sampled interfaces among many)
	Responder string    `json:"responder"`
	Kind      string    `json:"kind"` // broadcast or unicast
	Mode      string    `json:"mode"` // pinned or unpinned
	Summary   Summary   `json:"summary"`
	Rounds    []Summary `json:"rounds"`
	Extra     int       `json:"extra_replies"` // replies beyond one per request (late after a timeout, or duplicates)
	Sent      int       `json:"requests_sent"` // requests sent, warm-up included
	// PxSwitches counts pxresp's context switches (all threads, voluntary
	// and not) during its P or E blocks: the wake-ups a request costs it.
	PxSwitches uint64  `json:"pxresp_context_switches,omitempty"`
	Samples    []int64 `json:"samples_ns,omitempty"`
	lost       int
}

// FloodRun is one flood of broadcast requests from one pod.
type FloodRun struct {
	Responder   string  `json:"responder"`
	Round       int     `json:"round"`
	Pace        string  `json:"pace"` // "max" or "fixed"
	TargetRate  float64 `json:"target_rate,omitempty"`
	DurationNs  int64   `json:"duration_ns"` // sending time
	Sent        int64   `json:"sent"`
	SendErrors  int64   `json:"send_errors"`
	Replies     int64   `json:"replies"`
	SendRate    float64 `json:"send_rate"`  // requests/s achieved
	ReplyRate   float64 `json:"reply_rate"` // replies / (last reply - first send)
	Loss        float64 `json:"loss"`       // 1 - replies/sent
	ClientDrops uint32  `json:"client_socket_drops"`
	// RespDrops: P only (E has no socket), requests dropped by the kernel
	// at pxresp's socket (receive buffer full), from `ss -0 -m` (skmem d)
	// before and after.
	RespDrops int64  `json:"pxresp_socket_drops,omitempty"`
	CPUTicks  uint64 `json:"pxresp_cpu_ticks,omitempty"`
	CPUNs     uint64 `json:"pxresp_cpu_schedstat_ns,omitempty"`
}

// IdleResult is pxresp with many attached interfaces and no traffic.
type IdleResult struct {
	Interfaces int     `json:"interfaces"`
	DurationNs int64   `json:"duration_ns"`
	CPUTicks   uint64  `json:"cpu_ticks"`
	CPUNs      uint64  `json:"cpu_schedstat_ns"`
	Wakeups    int64   `json:"wakeups"`           // delta of voluntary+nonvoluntary switches over all threads
	Switches0  uint64  `json:"switches_at_start"` // the sum at the start (shows the counters are read)
	Threads    int     `json:"threads"`
	CPUPercent float64 `json:"cpu_percent"`
}

// MemPoint is pxresp's VmRSS with some interfaces attached.
type MemPoint struct {
	Interfaces int    `json:"interfaces"`
	RSSkB      uint64 `json:"rss_kb"`
}

// AttachResult: new veth, host side up at T0, first reply to a pod sending
// every period.
type AttachResult struct {
	Responder      string  `json:"responder,omitempty"` // P or E (older results: P)
	Reps           int     `json:"reps"`
	Failed         int     `json:"failed"`
	UpToReply      []int64 `json:"up_to_first_reply_ns"`
	Summary        Summary `json:"summary"`
	CreateToAttach []int64 `json:"create_to_attach_log_ns"`
	SetUpCallNs    []int64 `json:"link_set_up_call_ns"`
}

// BurstResult: N interfaces created in one `ip -batch`.
type BurstResult struct {
	Interfaces      int     `json:"interfaces"`
	Attached        int     `json:"attached"`
	CreateNs        int64   `json:"create_ns"`           // the two ip -batch commands (host, then far side up)
	HostBatchNs     int64   `json:"host_batch_ns"`       // the host-side batch alone
	AllAttachedNs   int64   `json:"all_attached_ns"`     // batch start -> last attach line
	AfterCreateNs   int64   `json:"after_create_ns"`     // host batch end -> last attach line
	SampleAnswerNs  int64   `json:"sample_answering_ns"` // batch start -> every sampled interface answered
	Sampled         int     `json:"sampled"`
	StartupAttachNs []int64 `json:"startup_attach_ns,omitempty"` // a new pxresp attaching to all existing ones (scale rounds)
}
