package policy

// raceEnabled is set by race_test.go when the race detector is on, which
// slows the timing tests down.
var raceEnabled = false
