package mongogate

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// lookupTimeout bounds the gate's own read of a document by _id.
const lookupTimeout = 10 * time.Second

// lockStripes is how many mutexes the document locks spread over: enough
// that unrelated documents rarely share one.
const lockStripes = 1024

// locks are the document locks. A write of one document holds its stripe
// and all for reading; a write of many documents holds all for writing.
type locks struct {
	all   sync.RWMutex
	seed  maphash.Seed
	docs  [lockStripes]sync.Mutex
	nolck func()
}

func (l *locks) init() {
	l.seed = maphash.MakeSeed()
	l.nolck = func() {}
}

func (l *locks) doc(key string) (unlock func()) {
	l.all.RLock()
	m := &l.docs[maphash.String(l.seed, key)%lockStripes]
	m.Lock()
	return func() {
		m.Unlock()
		l.all.RUnlock()
	}
}

func (l *locks) exclusive() (unlock func()) {
	l.all.Lock()
	return l.all.Unlock
}

// serial takes a writer's turn after a write's document locks: FerretDB
// writes through many SQLite connections, and SQLite makes a writer that
// finds the database locked sleep and try again (1 ms growing to 100 ms a
// time), so under load some writes waited seconds while others went first.
// The gate lets writers in Writers at a time, in their order of arrival
// (a channel's waiting senders are served first in, first out): SQLite
// keeps one writer at a time anyway, and the turn makes the rest wait in
// line instead of sleeping. The returned func releases both.
func (g *Gate) serial(unlock func()) func() {
	g.writers <- struct{}{}
	return func() {
		<-g.writers
		unlock()
	}
}

// admit decides how a client's message goes on: the bytes to forward with
// the lock to release at its reply, or nil when the gate answered it itself
// through reply (then the caller releases at once).
func (g *Gate) admit(raw []byte, reply func(to int32, body []byte) error) (forward []byte, unlock func(), err error) {
	m, perr := parseMessage(raw)
	if perr != nil {
		return raw, g.locks.nolck, nil // not ours to judge: FerretDB answers it
	}
	first, ferr := m.body.IndexErr(0)
	if ferr != nil {
		return raw, g.locks.nolck, nil
	}
	w := write{m: m, cmd: strings.ToLower(first.Key())}
	coll, _ := first.Value().StringValueOK()
	db, _ := m.body.Lookup("$db").StringValueOK()
	ns := db + "." + coll
	switch w.cmd {
	case "update":
		w.list = "updates"
	case "delete":
		w.list = "deletes"
	case "findandmodify":
	case strings.ToLower(FeedCommand):
		if err := reply(m.requestID, g.feed.answerFeed(m.body, db)); err != nil {
			return nil, nil, err
		}
		return nil, g.locks.nolck, nil
	case "insert":
		return raw, g.feed.afterInsert(g.serial(g.locks.nolck), ns, insertedIDs(m)), nil
	default:
		return raw, g.locks.nolck, nil // reads, commands
	}
	if !w.single() {
		g.stats.Exclusive.Add(1)
		return raw, g.feed.after(g.serial(g.locks.exclusive()), ns, "", true, nil), nil
	}
	id, rest, ok := splitFilter(w.filter())
	if !ok {
		g.stats.Exclusive.Add(1)
		return raw, g.feed.after(g.serial(g.locks.exclusive()), ns, "", true, nil), nil
	}
	sid, isString := id.StringValueOK()
	unlock = g.feed.after(g.locks.doc(ns+"\x00"+string(rune(id.Type))+string(id.Value)), ns, sid, !isString, w.fields())
	if len(rest) == 0 || w.upsert() || w.has("collation") {
		g.stats.Forwarded.Add(1)
		return raw, g.serial(unlock), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	doc, lerr := g.reader.Database(db).Collection(coll).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	matched, decided := false, true
	switch {
	case errors.Is(lerr, mongo.ErrNoDocuments):
	case lerr != nil:
		decided = false // let FerretDB try, and answer
	default:
		matched, decided = matches(doc, rest)
	}
	if !decided {
		g.stats.Forwarded.Add(1)
		return raw, g.serial(unlock), nil
	}
	g.stats.Decided.Add(1)
	if !matched {
		if err := reply(m.requestID, w.noMatch()); err != nil {
			unlock()
			return nil, nil, err
		}
		return nil, unlock, nil
	}
	byID, err := bson.Marshal(bson.D{{Key: "_id", Value: id}})
	if err != nil {
		unlock()
		return nil, nil, err
	}
	if err := w.setFilter(byID); err != nil {
		g.stats.Forwarded.Add(1)
		return raw, g.serial(unlock), nil
	}
	return m.encode(), g.serial(unlock), nil
}

// write is an update, delete or findAndModify command being admitted.
type write struct {
	m    *message
	cmd  string // lower case
	list string // "updates" or "deletes"; "" for findAndModify
}

// statements returns the command's statements and where they are: in a
// document sequence (seq ≥ 0) or the body's array.
func (w write) statements() (stmts []bson.Raw, seq int) {
	for i, s := range w.m.seqs {
		if s.id == w.list {
			return s.docs, i
		}
	}
	arr, ok := w.m.body.Lookup(w.list).ArrayOK()
	if !ok {
		return nil, -1
	}
	vals, err := arr.Values()
	if err != nil {
		return nil, -1
	}
	for _, v := range vals {
		d, ok := v.DocumentOK()
		if !ok {
			return nil, -1
		}
		stmts = append(stmts, d)
	}
	return stmts, -1
}

func (w write) single() bool {
	if w.list == "" {
		return true
	}
	stmts, _ := w.statements()
	return len(stmts) == 1
}

func (w write) stmt() bson.Raw {
	if w.list == "" {
		return w.m.body
	}
	stmts, _ := w.statements()
	return stmts[0]
}

func (w write) filter() bson.Raw {
	key := "q"
	if w.list == "" {
		key = "query"
	}
	d, _ := w.stmt().Lookup(key).DocumentOK()
	return d
}

func (w write) upsert() bool {
	b, _ := w.stmt().Lookup("upsert").BooleanOK()
	return b
}

// fields are the top-level fields the statement's update sets through
// operators (an upsert's new document holds only those and the _id); nil
// when any may change (a delete, a replacement, a pipeline).
func (w write) fields() []string {
	if w.list == "deletes" {
		return nil
	}
	key := "u"
	if w.list == "" {
		if rm, _ := w.stmt().Lookup("remove").BooleanOK(); rm {
			return nil
		}
		key = "update"
	}
	u, ok := w.stmt().Lookup(key).DocumentOK()
	if !ok {
		return nil
	}
	ops, err := u.Elements()
	if err != nil || len(ops) == 0 {
		return nil
	}
	var out []string
	for _, op := range ops {
		d, isDoc := op.Value().DocumentOK()
		if !strings.HasPrefix(op.Key(), "$") || !isDoc {
			return nil // a replacement
		}
		elems, err := d.Elements()
		if err != nil {
			return nil
		}
		for _, e := range elems {
			f, _, _ := strings.Cut(e.Key(), ".")
			if op.Key() == "$rename" {
				to, _ := e.Value().StringValueOK()
				t, _, _ := strings.Cut(to, ".")
				if !slices.Contains(out, t) {
					out = append(out, t)
				}
			}
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	if out == nil {
		return nil
	}
	return out
}

// insertedIDs are the string _ids of an insert's documents; nil when one
// has none or another kind (the feed then says all).
func insertedIDs(m *message) []string {
	var docs []bson.Raw
	found := false
	for _, s := range m.seqs {
		if s.id == "documents" {
			docs, found = s.docs, true
		}
	}
	if !found {
		arr, ok := m.body.Lookup("documents").ArrayOK()
		if !ok {
			return nil
		}
		vals, err := arr.Values()
		if err != nil {
			return nil
		}
		for _, v := range vals {
			d, ok := v.DocumentOK()
			if !ok {
				return nil
			}
			docs = append(docs, d)
		}
	}
	ids := make([]string, 0, len(docs))
	for _, d := range docs {
		id, ok := d.Lookup("_id").StringValueOK()
		if !ok {
			return nil
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	return ids
}

func (w write) has(key string) bool {
	_, err := w.stmt().LookupErr(key)
	return err == nil
}

// setFilter replaces the statement's filter with f.
func (w write) setFilter(f bson.Raw) error {
	if w.list == "" {
		body, err := replaceKey(w.m.body, "query", bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: f})
		w.m.body = body
		return err
	}
	stmt, err := replaceKey(w.stmt(), "q", bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: f})
	if err != nil {
		return err
	}
	if _, seq := w.statements(); seq >= 0 {
		w.m.seqs[seq].docs = []bson.Raw{stmt}
		return nil
	}
	arr, err := bson.Marshal(bson.D{{Key: "0", Value: stmt}})
	if err != nil {
		return err
	}
	body, err := replaceKey(w.m.body, w.list, bson.RawValue{Type: bson.TypeArray, Value: arr})
	w.m.body = body
	return err
}

// noMatch is the reply of a write whose filter matched no document.
func (w write) noMatch() []byte {
	var d bson.D
	switch w.cmd {
	case "update":
		d = bson.D{{Key: "n", Value: int32(0)}, {Key: "nModified", Value: int32(0)}}
	case "delete":
		d = bson.D{{Key: "n", Value: int32(0)}}
	default:
		d = bson.D{{Key: "lastErrorObject", Value: bson.D{{Key: "n", Value: int32(0)}, {Key: "updatedExisting", Value: false}}},
			{Key: "value", Value: nil}}
	}
	b, _ := bson.Marshal(append(d, bson.E{Key: "ok", Value: 1.0}))
	return b
}

// replaceKey returns doc with key's value replaced by v.
func replaceKey(doc bson.Raw, key string, v bson.RawValue) (bson.Raw, error) {
	elems, err := doc.Elements()
	if err != nil {
		return nil, err
	}
	idx, out := bsoncore.AppendDocumentStart(nil)
	for _, e := range elems {
		if e.Key() == key {
			out = bsoncore.AppendValueElement(out, key, bsoncore.Value{Type: bsoncore.Type(v.Type), Data: v.Value})
			continue
		}
		out = append(out, e...)
	}
	out, err = bsoncore.AppendDocumentEnd(out, idx)
	return bson.Raw(out), err
}

// splitFilter returns a filter's _id, when it names exactly one (a plain
// value or {$eq: v}), and its other conditions.
func splitFilter(f bson.Raw) (id bson.RawValue, rest []bson.RawElement, ok bool) {
	if f == nil {
		return id, nil, false
	}
	elems, err := f.Elements()
	if err != nil {
		return id, nil, false
	}
	for _, e := range elems {
		if e.Key() != "_id" {
			rest = append(rest, e)
			continue
		}
		if ok {
			return id, nil, false // _id twice
		}
		id, ok = e.Value(), true
		if d, isDoc := id.DocumentOK(); isDoc {
			ops, err := d.Elements()
			if err != nil || len(ops) != 1 || ops[0].Key() != "$eq" {
				return id, nil, false // {$in: …}, an embedded _id: many or unusual
			}
			id = ops[0].Value()
		}
		if !plain(id) {
			return id, nil, false
		}
	}
	return id, rest, ok
}

// plain reports a value whose equality is its bytes and type (or a number).
func plain(v bson.RawValue) bool {
	switch v.Type {
	case bson.TypeString, bson.TypeObjectID, bson.TypeBoolean, bson.TypeDateTime,
		bson.TypeInt32, bson.TypeInt64, bson.TypeDouble, bson.TypeNull:
		return true
	}
	return false
}

// matches tests doc against conditions; decided is false for one the gate
// does not evaluate.
func matches(doc bson.Raw, conds []bson.RawElement) (matched, decided bool) {
	for _, c := range conds {
		key := c.Key()
		if key == "" || key[0] == '$' || strings.Contains(key, ".") {
			return false, false
		}
		field, err := doc.LookupErr(key)
		present := err == nil
		if present && (field.Type == bson.TypeArray || field.Type == bson.TypeEmbeddedDocument) {
			return false, false // array and document semantics: leave to FerretDB
		}
		q := c.Value()
		ops, isDoc := q.DocumentOK()
		if !isDoc {
			if !plain(q) {
				return false, false
			}
			if !equal(present, field, q) {
				return false, true
			}
			continue
		}
		elems, err := ops.Elements()
		if err != nil || len(elems) == 0 {
			return false, false
		}
		for _, op := range elems {
			m, ok := operator(op, present, field)
			if !ok {
				return false, false
			}
			if !m {
				return false, true
			}
		}
	}
	return true, true
}

func operator(op bson.RawElement, present bool, field bson.RawValue) (matched, decided bool) {
	v := op.Value()
	switch op.Key() {
	case "$eq", "$ne":
		if !plain(v) {
			return false, false
		}
		return equal(present, field, v) == (op.Key() == "$eq"), true
	case "$in", "$nin":
		arr, ok := v.ArrayOK()
		if !ok {
			return false, false
		}
		vals, err := arr.Values()
		if err != nil {
			return false, false
		}
		in := false
		for _, x := range vals {
			if !plain(x) {
				return false, false
			}
			in = in || equal(present, field, x)
		}
		return in == (op.Key() == "$in"), true
	case "$exists":
		b, ok := v.BooleanOK()
		if !ok {
			return false, false
		}
		return present == b, true
	}
	return false, false
}

// equal is MongoDB's equality of a field (present or not) with a plain
// value: null matches a missing field, numbers compare by value.
func equal(present bool, field, q bson.RawValue) bool {
	if q.Type == bson.TypeNull {
		return !present || field.Type == bson.TypeNull
	}
	if !present {
		return false
	}
	if fi, ok := integer(field); ok {
		if qi, ok := integer(q); ok {
			return fi == qi
		}
	}
	if fa, ok := number(field); ok {
		if qa, ok := number(q); ok {
			return fa == qa
		}
		return false
	}
	return field.Type == q.Type && bytes.Equal(field.Value, q.Value)
}

func integer(v bson.RawValue) (int64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return int64(v.Int32()), true
	case bson.TypeInt64:
		return v.Int64(), true
	}
	return 0, false
}

func number(v bson.RawValue) (float64, bool) {
	if n, ok := integer(v); ok {
		return float64(n), true
	}
	if v.Type == bson.TypeDouble {
		return v.Double(), true
	}
	return 0, false
}
