package mongogate

import (
	"crypto/rand"
	"encoding/binary"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// FeedCommand is the gate's own command, answered here and never sent to
// FerretDB: which documents of a collection writes through the gate
// touched since a cursor. FerretDB v1 has no change streams; this is the
// embedded store's stand-in, so that a client following many documents
// (the API's event streams, one queue document per user) asks once per
// tick instead of reading each document.
//
// Request: {turnstileChanges: <collection>, epoch: <int64>, after: <int64>,
// $db: <database>}; epoch 0 asks for a cursor at the present. Reply:
// {epoch, next, ids: [<string _id>...], all: <bool>, ok: 1}. all means the
// gate cannot tell which documents changed (a write of many documents, an
// insert, a document with a non-string _id, a cursor from another epoch,
// one the feed no longer reaches, or more than FeedMaxIDs of them): the
// client treats every document as changed. A change is in the feed once
// FerretDB has answered its write and before the writer hears of it.
const FeedCommand = "turnstileChanges"

// FeedMaxIDs bounds the IDs one reply lists.
const FeedMaxIDs = 10000

// feedKeep is how many changes the feed remembers.
const feedKeep = 1 << 16

type feedEntry struct {
	seq int64
	ns  string // database.collection
	id  string // "" with all
	all bool
}

// feed is the gate's record of the writes it forwarded, a ring of the last
// feedKeep.
type feed struct {
	mu    sync.Mutex
	epoch int64
	seq   int64 // of the newest entry
	ring  []feedEntry
}

func (f *feed) init() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	f.epoch = int64(binary.LittleEndian.Uint64(b[:])&(1<<62-1)) + 1
	f.ring = make([]feedEntry, feedKeep)
}

func (f *feed) add(ns, id string, all bool) {
	f.mu.Lock()
	f.seq++
	f.ring[f.seq%feedKeep] = feedEntry{seq: f.seq, ns: ns, id: id, all: all}
	f.mu.Unlock()
}

// after returns unlock followed by the record of a write of ns's
// document id (all: of any of its documents), for the write's reply.
func (f *feed) after(unlock func(), ns, id string, all bool) func() {
	return func() {
		f.add(ns, id, all)
		unlock()
	}
}

// changes answers FeedCommand for ns.
func (f *feed) changes(ns string, epoch, after int64) (ids []string, all bool, next int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if epoch == 0 {
		return nil, false, f.seq
	}
	if epoch != f.epoch || after > f.seq || after < f.seq-feedKeep {
		return nil, true, f.seq
	}
	seen := map[string]bool{}
	for s := after + 1; s <= f.seq; s++ {
		e := f.ring[s%feedKeep]
		if e.ns != ns {
			continue
		}
		if e.all || len(seen) >= FeedMaxIDs {
			return nil, true, f.seq
		}
		if !seen[e.id] {
			seen[e.id] = true
			ids = append(ids, e.id)
		}
	}
	return ids, false, f.seq
}

// answerFeed is the reply to a FeedCommand body.
func (f *feed) answerFeed(body bson.Raw, db string) []byte {
	coll, _ := body.Lookup(FeedCommand).StringValueOK()
	epoch, _ := body.Lookup("epoch").AsInt64OK()
	after, _ := body.Lookup("after").AsInt64OK()
	ids, all, next := f.changes(db+"."+coll, epoch, after)
	if ids == nil {
		ids = []string{}
	}
	b, _ := bson.Marshal(bson.D{
		{Key: "epoch", Value: f.epoch}, {Key: "next", Value: next},
		{Key: "ids", Value: ids}, {Key: "all", Value: all}, {Key: "ok", Value: 1.0},
	})
	return b
}
