// Package golden compares a test's output with an expected file in
// testdata, and rewrites the file when the test runs with -update.
//
// It owns the one golden-file check the packages' tests share; it does not
// own the files, their names or what the output is (each test decides).
package golden
