package dnsx

import (
	"testing"
	"time"
)

// TestCacheHonoursTTL: with CacheMax set, a positive answer is reused for
// its TTL (capped at CacheMax), then asked again; TTL 0 is never kept.
func TestCacheHonoursTTL(t *testing.T) {
	s := newTestServer(t,
		"cache.test. 1 IN MX 10 mx.cache.test.",
		"nocache.test. 0 IN MX 10 mx.nocache.test.",
	)
	c := New(Options{Servers: []string{s.Addr}, Timeout: time.Second, CacheMax: time.Minute})
	ctx := ctxTimeout(t, 10*time.Second)
	count := func(name string) int {
		n := 0
		for _, q := range s.received() {
			if q.Name == name {
				n++
			}
		}
		return n
	}
	for range 3 {
		if mx, err := c.LookupMX(ctx, "cache.test"); err != nil || len(mx) != 1 {
			t.Fatalf("LookupMX = %v, %v", mx, err)
		}
		if _, err := c.LookupMX(ctx, "nocache.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := count("cache.test."); n != 1 {
		t.Errorf("cache.test asked %d times within its TTL, want 1", n)
	}
	if n := count("nocache.test."); n != 3 {
		t.Errorf("nocache.test (TTL 0) asked %d times, want 3", n)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := c.LookupMX(ctx, "cache.test"); err != nil {
		t.Fatal(err)
	}
	if n := count("cache.test."); n != 2 {
		t.Errorf("cache.test asked %d times after its TTL ran out, want 2", n)
	}
}
