package loader

// NetnsCookieFromProbe exposes the pre-5.14 fallback to the tests.
var NetnsCookieFromProbe = netnsCookieFromProbe

// WithoutCloneIntoCgroup makes the netns probe take the path used where
// clone3 is refused, until the test ends.
func WithoutCloneIntoCgroup(tb interface{ Cleanup(func()) }) {
	cloneIntoCgroup = false
	tb.Cleanup(func() { cloneIntoCgroup = true })
}
