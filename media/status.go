package media

import (
	"sort"
	"time"
)

// ParticipantView is one participant anchored here, for /api/status.
type ParticipantView struct {
	CallID    string `json:"call_id"`
	AOR       string `json:"aor"`
	Role      string `json:"role"`
	Kind      string `json:"kind"`
	KeepAlive string `json:"keep_alive"`
	Media     bool   `json:"media"`
	Present   bool   `json:"present"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Lost      uint64 `json:"lost"`
	SilentMs  int64  `json:"silent_ms"` // since the endpoint's last packet (or its join)
}

// ConferenceView is a conference with its participants on this instance.
type ConferenceView struct {
	ID           string            `json:"id"`
	Participants []ParticipantView `json:"participants"`
}

// Conferences lists the conferences with participants anchored here.
func (mg *Manager) Conferences() []ConferenceView {
	now := mg.opts.Clock()
	byConf := map[string]*ConferenceView{}
	for _, s := range mg.snapshot() {
		st := s.endpointStats()
		s.mu.Lock()
		if !s.joined {
			s.mu.Unlock()
			continue
		}
		v := ParticipantView{CallID: s.callID, AOR: s.part.AOR, Role: string(s.part.Role), Kind: string(s.part.Kind),
			KeepAlive: string(s.part.KeepAlive), Media: s.hasMedia, Present: s.present,
			Packets: st.Packets, Bytes: st.Bytes, Lost: st.Lost,
			SilentMs: now.Sub(silentSince(s.joinedAt, st)).Round(time.Millisecond).Milliseconds()}
		conf := s.confID
		s.mu.Unlock()
		c := byConf[conf]
		if c == nil {
			c = &ConferenceView{ID: conf}
			byConf[conf] = c
		}
		c.Participants = append(c.Participants, v)
	}
	out := make([]ConferenceView, 0, len(byConf))
	for _, c := range byConf {
		sort.Slice(c.Participants, func(i, j int) bool { return c.Participants[i].CallID < c.Participants[j].CallID })
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
