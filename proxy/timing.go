package proxy

import (
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// inviteTiming times new INVITEs from the moment sipedge sends them on to
// the node's first response and its final one: how fast the nodes answer
// through this instance (sipedge's own 100 Trying is not counted).
type inviteTiming struct {
	first prometheus.Histogram
	final [6]prometheus.Observer // by response class 2..5 (response clamps 6xx to 5)
}

var inviteBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

func newInviteTiming(reg prometheus.Registerer) (*inviteTiming, error) {
	first := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sipedge_sip_invite_first_response_seconds",
		Help:    "Time from a new INVITE sent to its node to the node's first response (100 Trying included).",
		Buckets: inviteBuckets,
	})
	final := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sipedge_sip_invite_final_response_seconds",
		Help:    "Time from a new INVITE sent to its node to the final response relayed to the caller, by class (2xx..5xx; 6xx counted as 5xx).",
		Buckets: inviteBuckets,
	}, []string{"class"})
	for _, c := range []prometheus.Collector{first, final} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register invite timing: %w", err)
		}
	}
	t := &inviteTiming{first: first}
	for i := 2; i <= 5; i++ {
		t.final[i] = final.WithLabelValues(fmt.Sprintf("%dxx", i))
	}
	return t, nil
}

// inviteClock follows one new INVITE's responses; the zero value times nothing.
type inviteClock struct {
	t         *inviteTiming
	sent      time.Time
	firstSeen bool
}

func (t *inviteTiming) start(in *sip.Request, newDialog bool) inviteClock {
	if t == nil || !newDialog || !in.IsInvite() {
		return inviteClock{}
	}
	return inviteClock{t: t, sent: time.Now()}
}

// response records a response from the node (first) and, when final, the
// final time.
func (c *inviteClock) response(res *sip.Response) {
	if c.t == nil {
		return
	}
	d := time.Since(c.sent).Seconds()
	if !c.firstSeen {
		c.firstSeen = true
		c.t.first.Observe(d)
	}
	if res.IsProvisional() {
		return
	}
	class := min(max(res.StatusCode/100, 2), 5)
	c.t.final[class].Observe(d)
	c.t = nil
}
