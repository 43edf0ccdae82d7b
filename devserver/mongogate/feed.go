package mongogate

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
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
// {epoch, next, ids: [<string _id>...], fields: [[<field>...] or null...],
// all: <bool>, ok: 1}. fields[i] names the top-level fields the writes of
// ids[i] set through update operators ($set, $max, $inc, ...); null when
// any may have changed (an insert, a replacement, a pipeline, a delete).
// An insert lists the string _id of each document it carries. all means
// the gate cannot tell which documents changed (a write of many documents
// by filter, a document with a non-string _id, a cursor from another
// epoch, one the feed no longer reaches, or more than FeedMaxIDs of them):
// the client treats every document as changed. A change is in the feed
// once FerretDB has answered its write and before the writer hears of it.
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
	// fields the write set (update operators' top-level keys); nil: any.
	fields []string
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

func (f *feed) add(e feedEntry) {
	f.mu.Lock()
	f.seq++
	e.seq = f.seq
	f.ring[f.seq%feedKeep] = e
	f.mu.Unlock()
}

// after returns unlock followed by the record of a write of ns's
// document id (all: of any of its documents) that set fields (nil: any),
// for the write's reply.
func (f *feed) after(unlock func(), ns, id string, all bool, fields []string) func() {
	return func() {
		f.add(feedEntry{ns: ns, id: id, all: all, fields: fields})
		unlock()
	}
}

// afterInsert returns unlock followed by the record of an insert into ns
// of the documents with ids (nil: some had no string _id, so all).
func (f *feed) afterInsert(unlock func(), ns string, ids []string) func() {
	return func() {
		if ids == nil {
			f.add(feedEntry{ns: ns, all: true})
		}
		for _, id := range ids {
			f.add(feedEntry{ns: ns, id: id})
		}
		unlock()
	}
}

// changes answers FeedCommand for ns.
func (f *feed) changes(ns string, epoch, after int64) (ids []string, fields [][]string, all bool, next int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if epoch == 0 {
		return nil, nil, false, f.seq
	}
	if epoch != f.epoch || after > f.seq || after < f.seq-feedKeep {
		return nil, nil, true, f.seq
	}
	seen := map[string]int{}
	for s := after + 1; s <= f.seq; s++ {
		e := f.ring[s%feedKeep]
		if e.ns != ns {
			continue
		}
		if e.all || len(seen) >= FeedMaxIDs {
			return nil, nil, true, f.seq
		}
		i, ok := seen[e.id]
		if !ok {
			seen[e.id] = len(ids)
			ids = append(ids, e.id)
			fields = append(fields, slices.Clone(e.fields))
			continue
		}
		switch {
		case fields[i] == nil:
		case e.fields == nil:
			fields[i] = nil
		default:
			for _, k := range e.fields {
				if !slices.Contains(fields[i], k) {
					fields[i] = append(fields[i], k)
				}
			}
		}
	}
	return ids, fields, false, f.seq
}

// answerFeed is the reply to a FeedCommand body.
func (f *feed) answerFeed(body bson.Raw, db string) []byte {
	coll, _ := body.Lookup(FeedCommand).StringValueOK()
	epoch, _ := body.Lookup("epoch").AsInt64OK()
	after, _ := body.Lookup("after").AsInt64OK()
	ids, fields, all, next := f.changes(db+"."+coll, epoch, after)
	if ids == nil {
		ids, fields = []string{}, [][]string{}
	}
	fs := make(bson.A, len(fields))
	for i, k := range fields {
		if k != nil {
			fs[i] = k
		}
	}
	b, _ := bson.Marshal(bson.D{
		{Key: "epoch", Value: f.epoch}, {Key: "next", Value: next},
		{Key: "ids", Value: ids}, {Key: "fields", Value: fs}, {Key: "all", Value: all}, {Key: "ok", Value: 1.0},
	})
	return b
}
