package loader

// NetnsCookieFromProbe exposes the pre-5.14 fallback to the tests.
var NetnsCookieFromProbe = netnsCookieFromProbe
