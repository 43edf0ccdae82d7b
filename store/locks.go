package store

import (
	"hash/maphash"
	"sync"
)

// docLockStripes is how many mutexes docLocks spreads documents over: enough
// that unrelated documents rarely share one, small enough to be free.
const docLockStripes = 256

// docLockTable is shared by every Store in the process, so the API's and the
// worker's stores serialise against each other when one process runs both
// (the embedded launcher).
var docLockTable struct {
	seed    maphash.Seed
	stripes [docLockStripes]sync.Mutex
}

func init() { docLockTable.seed = maphash.MakeSeed() }

// docLocks makes a repository's updates of one document take turns when
// Options.SerializeUpdates is set; otherwise it does nothing.
type docLocks struct {
	on bool
	ns string // database.collection
}

// lock locks the document with id and returns the unlock function. No
// caller holds two locks at once, so stripes cannot deadlock.
func (l docLocks) lock(id string) (unlock func()) {
	if !l.on {
		return func() {}
	}
	m := &docLockTable.stripes[maphash.String(docLockTable.seed, l.ns+"\x00"+id)%docLockStripes]
	m.Lock()
	return m.Unlock
}
