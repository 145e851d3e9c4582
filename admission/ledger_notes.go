package admission

// End notes: a dialog that ended through this instance but was set up by
// another is noted to its owner, which ends it at its next beat.

import (
	"context"
	"time"
)

// noteWrites is how many beats in a row a note is written again after it
// was first written: a Redis that loses its data (restarted empty) before
// the owner read the note gets it again. The owner ignores what it no
// longer holds, so a note read twice ends nothing twice.
const noteWrites = 5

// writeNotes writes the end notes to their owners: new ones only (all is
// false, on every change) or every note still due (at each beat).
func (l *Ledger) writeNotes(ctx context.Context, all bool) {
	l.mu.Lock()
	batch := map[string][]string{}
	for owner, ks := range l.notes {
		for k, due := range ks {
			if all || due == noteWrites {
				batch[owner] = append(batch[owner], k)
			}
		}
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	pipe := l.rdb.Pipeline()
	for owner, ks := range batch {
		members := make([]any, len(ks))
		for i, k := range ks {
			members[i] = k
		}
		pipe.SAdd(ctx, l.k.Ended(owner), members...)
		pipe.PExpire(ctx, l.k.Ended(owner), notesTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		l.fail(ctx, "note", err) // all kept, due as before
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for owner, ks := range batch {
		for _, k := range ks {
			due, ok := l.notes[owner][k]
			if !ok {
				continue
			}
			if due == noteWrites {
				l.m.notes.WithLabelValues("sent").Inc()
			}
			if due <= 1 {
				delete(l.notes[owner], k)
			} else {
				l.notes[owner][k] = due - 1
			}
		}
		if len(l.notes[owner]) == 0 {
			delete(l.notes, owner)
		}
	}
}

// reconcileAfter is how many successful beats in a row come before a
// reconcile: every live instance beats at the same interval.
const reconcileAfter = 3

// notesTTL bounds how long an end note waits for its owner.
const notesTTL = 10 * time.Minute

// consumeNotes ends the dialogs other instances saw end, then removes the
// notes it read (a note read twice is ignored the second time).
func (l *Ledger) consumeNotes(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(l.opts.RedisTimeout, time.Second))
	defer cancel()
	key := l.k.Ended(l.opts.Self)
	ks, err := l.rdb.SMembers(ctx, key).Result()
	if err != nil {
		l.fail(ctx, "notes", err)
		return
	}
	if len(ks) == 0 {
		return
	}
	n := l.src.EndNoted(ks)
	l.m.notes.WithLabelValues("received").Add(float64(len(ks)))
	l.log.Debug().Int("notes", len(ks)).Int("ended", n).Msg("dialog ends noted by other instances")
	members := make([]any, len(ks))
	for i, k := range ks {
		members[i] = k
	}
	if err := l.rdb.SRem(ctx, key, members...).Err(); err != nil {
		l.fail(ctx, "notes", err)
	}
}
