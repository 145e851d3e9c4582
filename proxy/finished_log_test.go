package proxy

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pointerFree reports the first field of t (walked through arrays and
// structs) the garbage collector would have to follow.
func pointerFree(t reflect.Type) (string, bool) {
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if name, ok := pointerFree(f.Type); !ok {
				return f.Name + "." + name, false
			}
		}
		return "", true
	case reflect.Array:
		return pointerFree(t.Elem())
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return "", true
	}
	return t.String(), false
}

// The collector marks the table's log blocks, not its entries: the map's
// keys and values and the queue's items hold no pointer, and a queue
// block's only pointer is its first word.
func TestFinishedTable_HoldsNoPointerPerEntry(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[finishedRec](), reflect.TypeFor[finishedItem](),
		reflect.TypeFor[finishedShard]().Field(1).Type.Key(), // the map's key
		reflect.TypeFor[finishedShard]().Field(1).Type.Elem(),
	} {
		if field, ok := pointerFree(typ); !ok {
			t.Errorf("%s holds a pointer (%s): one more object per entry for every GC cycle", typ, field)
		}
	}
	qc := reflect.TypeFor[queueChunk]()
	if f := qc.Field(0); f.Name != "next" || f.Offset != 0 {
		t.Errorf("queueChunk's first field is %s, want next", f.Name)
	}
	if _, ok := pointerFree(qc.Field(1).Type); !ok {
		t.Error("queueChunk's items hold pointers")
	}
}

// Entries of every size come back as they were put, the log's blocks are
// dropped as their entries expire, and data read before survives the
// drop of its block.
func TestFinishedTable_LogKeepsDataAndFreesBlocks(t *testing.T) {
	clk := newFakeClock()
	tab := newFinishedTable(time.Second, 0, clk.now)
	big := strings.Repeat("x", 3*logBlockSize) // larger than a block: a block of its own
	tab.put("big", finishedEntry{data: big, conn: 3})
	e, ok := tab.getString("big")
	if !ok || e.data != big || e.conn != 3 {
		t.Fatalf("big entry: %v, %d bytes, conn %d", ok, len(e.data), e.conn)
	}
	held := e.data
	for i := range 20000 {
		k := "key-" + strconv.Itoa(i)
		tab.put(k, finishedEntry{data: "data-" + k, sum: uint64(i), flag: i%2 == 0})
		clk.advance(100 * time.Microsecond) // 10 000 live at a time
	}
	for _, i := range []int{10001, 15000, 19999} {
		k := "key-" + strconv.Itoa(i)
		e, ok := tab.getString(k)
		if !ok || e.data != "data-"+k || e.sum != uint64(i) || e.flag != (i%2 == 0) {
			t.Fatalf("%s: %+v, %v", k, e, ok)
		}
	}
	if _, ok := tab.get([]byte("key-5000")); ok {
		t.Fatal("an expired entry was found")
	}
	if _, ok := tab.getString("key-1999x"); ok {
		t.Fatal("a key never put was found")
	}
	blocks := 0
	for i := range tab.shards {
		blocks += len(tab.shards[i].blocks)
	}
	// 10 000 live entries of about 20 bytes: 200 KB, a block or two per shard.
	if blocks > 3*finishedShards {
		t.Fatalf("%d log blocks held for 10 000 small entries", blocks)
	}
	clk.advance(2 * time.Second)
	tab.expireAll()
	for i := range tab.shards {
		if s := &tab.shards[i]; len(s.blocks) != 0 || len(s.m) != 0 {
			t.Fatalf("shard %d holds %d blocks, %d entries after every entry expired", i, len(s.blocks), len(s.m))
		}
	}
	if held != big {
		t.Fatal("data read before its block was dropped changed")
	}
}
