package raftbolt

import (
	"sync"
	"time"
)

// ticker is one of the Store's background loops (the gauges, the journal's
// checkpoints, automatic compaction): fn runs every interval, and when
// woken, until stopped. The one implementation of starting and stopping
// them.
type ticker struct {
	wake chan struct{}
	stop chan struct{}
	done sync.WaitGroup
}

// start runs fn every interval (and once at once if first) until stop.
func (t *ticker) start(interval time.Duration, first bool, fn func()) {
	t.wake = make(chan struct{}, 1)
	t.stop = make(chan struct{})
	t.done.Add(1)
	go func() {
		defer t.done.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		if first {
			fn()
		}
		for {
			select {
			case <-tk.C:
			case <-t.wake:
			case <-t.stop:
				return
			}
			fn()
		}
	}()
}

// poke makes the loop run fn soon, without waiting for its interval.
func (t *ticker) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// halt stops the loop and waits for a run of fn in progress. A loop never
// started, or halted already, is left as it is.
func (t *ticker) halt() {
	if t.stop != nil {
		close(t.stop)
		t.done.Wait()
		t.stop = nil
	}
}
