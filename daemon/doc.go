// Package daemon is `bindguard run`: it loads and compiles the registry,
// puts it in force through the loader, logs violation events as structured
// records, reloads on SIGHUP and on registry changes, serves metrics, and
// decides on exit whether enforcement stays (--keep-on-exit) or goes.
//
// It owns the daemon's life cycle and its outputs. Parsing and validation
// belong to package policy, kernel objects to package loader.
package daemon
