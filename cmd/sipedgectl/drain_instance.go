package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// errInstanceDead is returned when an instance stops sending heartbeats
// before it has drained.
var errInstanceDead = errors.New("instance stopped sending heartbeats before it drained")

// instanceExists reports whether name is in the instances set or has a hash.
func (a *app) instanceExists(ctx context.Context, name string) (bool, error) {
	member, err := a.rdb.SIsMember(ctx, a.k.Instances(), name).Result()
	if err != nil {
		return false, redisErr("read instances", err)
	}
	if member {
		return true, nil
	}
	n, err := a.rdb.Exists(ctx, a.k.Instance(name)).Result()
	if err != nil {
		return false, redisErr("read instance "+name, err)
	}
	return n > 0, nil
}

// instanceDrainSample reads the drain state of a sipedge instance: the
// state and dialogs it writes itself, and whether a profile deservices it.
func (a *app) instanceDrainSample(ctx context.Context, name string, hbTimeout time.Duration) (drainSample, error) {
	f, err := a.rdb.HGetAll(ctx, a.k.Instance(name)).Result()
	if err != nil {
		return drainSample{}, redisErr("read instance "+name, err)
	}
	if len(f) == 0 {
		return drainSample{}, fmt.Errorf("instance %q has no hash (never started, or removed): %w", name, errUnknownInstance)
	}
	profiles, err := a.loadProfiles(ctx)
	if err != nil {
		return drainSample{}, err
	}
	now := a.now()
	r := parseInstance(a.k, name, f, now, hbTimeout)
	s := drainSample{Kind: kindInstance, Name: name, State: r.State, At: now}
	if r.Dialogs != nil {
		s.Calls = *r.Dialogs
	}
	by := deservicedBy(profiles)
	ids := slices.Clone(by[name])
	for _, id := range by[r.Server] {
		if r.Server != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		s.Reason = "deserviced by profile " + strings.Join(ids, ", ")
	}
	var notes []string
	switch r.State {
	case "drained":
		s.Done = true
	case "draining":
		s.Draining = true
	default:
		s.Draining = len(ids) > 0
		if s.Draining {
			notes = append(notes, "a profile deservices it but it still reports state "+orDash(r.State))
		}
	}
	if r.HeldBack != nil && *r.HeldBack {
		notes = append(notes, "deservice held back: it keeps admitting new dialogs (it is the last alive "+
			"instance of its site, or an exception)")
	}
	if !r.Alive && !s.Done {
		s.Dead = true
		notes = append(notes, "not alive: last heartbeat "+age(now, r.heartbeat))
	}
	s.Note = strings.Join(notes, "; ")
	return s, nil
}
