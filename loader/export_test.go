package loader

import "time"

// NetnsCookieFromProbe exposes the pre-5.14 fallback to the tests.
var NetnsCookieFromProbe = netnsCookieFromProbe

// WithVisibleWait sets how long CgroupCreated waits for a new cgroup's
// directory, until the test ends.
func WithVisibleWait(tb interface{ Cleanup(func()) }, d time.Duration) {
	old := visibleWait
	visibleWait = d
	tb.Cleanup(func() { visibleWait = old })
}

// WithoutCloneIntoCgroup makes the netns probe take the path used where
// clone3 is refused, until the test ends.
func WithoutCloneIntoCgroup(tb interface{ Cleanup(func()) }) {
	cloneIntoCgroup = false
	tb.Cleanup(func() { cloneIntoCgroup = true })
}

// WithFailingMemberWrites makes the membership writes of the cgroups fail
// returns true for fail, until the test ends.
func WithFailingMemberWrites(tb interface{ Cleanup(func()) }, fail func(rel string) bool) {
	failWrites = fail
	tb.Cleanup(func() { failWrites = nil })
}
