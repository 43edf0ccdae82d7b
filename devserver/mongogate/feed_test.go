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
	Epoch int64    `bson:"epoch"`
	Next  int64    `bson:"next"`
	IDs   []string `bson:"ids"`
	All   bool     `bson:"all"`
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
	slices.Sort(r.IDs)
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
	if m := changes(t, c, r.Epoch, r.Next); !m.All {
		t.Errorf("after an update of many: %+v, want all", m)
	}
	if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: "d"}}); err != nil {
		t.Fatal(err)
	}
	last := changes(t, c, r.Epoch, r.Next)
	if !last.All {
		t.Errorf("after an insert: %+v, want all", last)
	}
	if e := changes(t, c, last.Epoch+1, last.Next); !e.All {
		t.Errorf("a cursor of another epoch (a restarted gate): %+v, want all", e)
	}
	if o := changes(t, other, start.Epoch, start.Next); o.All || fmt.Sprint(o.IDs) != "[x]" {
		t.Errorf("the other collection: %+v, want x", o)
	}
}
