package app

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Which counters the live view sums (failureTotals).
type failureCounter int

const (
	failureNone failureCounter = iota
	failureReject
	failureError
)

func failureKind(name string) failureCounter {
	switch {
	case name == "sipedge_admission_rejects_total" || name == "sipedge_proxy_limited_total":
		return failureReject
	case name == "sipedge_sip_malformed_total" || name == "sipedge_sip_messages_not_sent_total" ||
		strings.HasSuffix(name, "_redis_errors_total"):
		return failureError
	}
	return failureNone
}

// failureRegisterer registers every collector in the daemon's registry,
// and those of the counters failureTotals sums in a registry of their own
// too, which the live view gathers every second. Gathering the daemon's
// whole registry (every series and histogram, sorted, built as protobuf
// messages) was about 3 ms of CPU a second at 3000 calls/s (30 ms of a
// 10 s CPU profile; BENCHMARKS.md, "The live view's registry").
type failureRegisterer struct {
	prometheus.Registerer
	failures *prometheus.Registry
}

func newFailureRegisterer(main prometheus.Registerer) failureRegisterer {
	return failureRegisterer{Registerer: main, failures: prometheus.NewRegistry()}
}

func (r failureRegisterer) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	if !describesFailure(c) {
		return nil
	}
	if err := r.failures.Register(c); err != nil {
		r.Registerer.Unregister(c)
		return fmt.Errorf("register a failure counter for the live view: %w", err)
	}
	return nil
}

func (r failureRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r failureRegisterer) Unregister(c prometheus.Collector) bool {
	r.failures.Unregister(c)
	return r.Registerer.Unregister(c)
}

// describesFailure reports whether c collects a counter failureTotals
// sums. A Desc shows its name only in its String form,
// `Desc{fqName: "…", help: …}`.
func describesFailure(c prometheus.Collector) bool {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	found := false
	for d := range ch {
		if failureKind(descName(d)) != failureNone {
			found = true
		}
	}
	return found
}

func descName(d *prometheus.Desc) string {
	s := d.String()
	const pre = `fqName: "`
	i := strings.Index(s, pre)
	if i < 0 {
		return ""
	}
	s = s[i+len(pre):]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}
