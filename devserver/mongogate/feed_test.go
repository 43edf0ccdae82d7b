package mongogate

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

type feedReply struct {
	Epoch  int64      `bson:"epoch"`
	Next   int64      `bson:"next"`
	IDs    []string   `bson:"ids"`
	Fields [][]string `bson:"fields"`
	All    bool       `bson:"all"`
}

// fieldsOf is what the reply says the writes of id set ("any" for null).
func (r feedReply) fieldsOf(id string) string {
	for i, x := range r.IDs {
		if x == id {
			if r.Fields[i] == nil {
				return "any"
			}
			f := slices.Clone(r.Fields[i])
			slices.Sort(f)
			return fmt.Sprint(f)
		}
	}
	return "not listed"
}

func changes(t *testing.T, c *mongo.Collection, epoch, after int64) feedReply {
	t.Helper()
	var r feedReply
	err := c.Database().RunCommand(context.Background(), bson.D{
		{Key: FeedCommand, Value: c.Name()}, {Key: "epoch", Value: epoch}, {Key: "after", Value: after},
	}).Decode(&r)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Fields) != len(r.IDs) {
		t.Fatalf("reply %+v: a fields entry per id wanted", r)
	}
	fields := map[string][]string{}
	for i, id := range r.IDs {
		fields[id] = r.Fields[i]
	}
	slices.Sort(r.IDs)
	for i, id := range r.IDs {
		r.Fields[i] = fields[id]
	}
	return r
}

// The feed tells which documents writes through the gate touched since a
// cursor, per collection, and "all" when it cannot tell.
func TestFeedListsTheDocumentsWritesTouched(t *testing.T) {
	g := startGate(t, startFerretDB(t))
	c := connect(t, g.Addr())
	ctx := context.Background()
	other := c.Database().Collection("other")
	start := changes(t, c, 0, 0)
	if start.All || len(start.IDs) != 0 {
		t.Fatalf("a fresh cursor: %+v, want nothing listed", start)
	}
	up := func(coll *mongo.Collection, id string) {
		t.Helper()
		if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "rev", Value: 1}}}}, options.UpdateOne().SetUpsert(true)); err != nil {
			t.Fatal(err)
		}
	}
	up(c, "a")
	up(c, "b")
	up(c, "a")
	up(other, "x")
	if _, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "c"}, {Key: "rev", Value: 7}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 1}}}}); err != nil {
		t.Fatal(err) // conditional, matches nothing: may be listed, harmless
	}
	r := changes(t, c, start.Epoch, start.Next)
	if r.All || fmt.Sprint(r.IDs[:2]) != "[a b]" || len(r.IDs) > 3 {
		t.Errorf("after writes of a, b, a (and x elsewhere): %+v, want a and b", r)
	}
	if again := changes(t, c, r.Epoch, r.Next); again.All || len(again.IDs) != 0 {
		t.Errorf("nothing written since: %+v", again)
	}
	if _, err := c.UpdateMany(ctx, bson.D{}, bson.D{{Key: "$inc", Value: bson.D{{Key: "rev", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	m := changes(t, c, r.Epoch, r.Next)
	if !m.All {
		t.Errorf("after an update of many: %+v, want all", m)
	}
	if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: "d"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: "e"}}, bson.D{{Key: "_id", Value: "f"}}}); err != nil {
		t.Fatal(err)
	}
	ins := changes(t, c, m.Epoch, m.Next)
	if ins.All || fmt.Sprint(ins.IDs) != "[d e f]" || ins.fieldsOf("e") != "any" {
		t.Errorf("after inserts of d, then e and f: %+v, want d, e, f, any field", ins)
	}
	var a bson.M
	if err := c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{
		{Key: "$set", Value: bson.D{{Key: "x.y", Value: 1}}}, {Key: "$max", Value: bson.D{{Key: "low", Value: 3}}},
	}).Decode(&a); err != nil {
		t.Fatal(err)
	}
	up(c, "a")
	if _, err := c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "b"}}, bson.D{{Key: "n", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	up(c, "b")
	fs := changes(t, c, ins.Epoch, ins.Next)
	if fs.All || fs.fieldsOf("a") != "[low rev x]" || fs.fieldsOf("b") != "any" {
		t.Errorf("after $set x.y, $max low, $inc rev of a and a replacement of b: a %s, b %s; want [low rev x] and any",
			fs.fieldsOf("a"), fs.fieldsOf("b"))
	}
	if _, err := c.InsertOne(ctx, bson.D{{Key: "n", Value: 1}}); err != nil {
		t.Fatal(err) // the driver gives it an ObjectID
	}
	last := changes(t, c, fs.Epoch, fs.Next)
	if !last.All {
		t.Errorf("after an insert of a document without a string _id: %+v, want all", last)
	}
	if e := changes(t, c, last.Epoch+1, last.Next); !e.All {
		t.Errorf("a cursor of another epoch (a restarted gate): %+v, want all", e)
	}
	if o := changes(t, other, start.Epoch, start.Next); o.All || fmt.Sprint(o.IDs) != "[x]" || o.fieldsOf("x") != "[rev]" {
		t.Errorf("the other collection: %+v, want x, [rev]", o)
	}
}
