package store

import "time"

// SetSweepAfter replaces the delays of the sweeps after a tombstone; the
// returned func restores them.
func SetSweepAfter(d ...time.Duration) (restore func()) {
	old := sweepAfter
	sweepAfter = d
	return func() { sweepAfter = old }
}
