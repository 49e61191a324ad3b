// Package kube is bindguard's view of its own Node object: the client
// configuration, found the way client-go tools find it, and a watcher that
// delivers one Node's labels on every change.
//
// It owns talking to the API server: list and watch by field selector,
// resuming from the last resourceVersion, relisting when the watch expires,
// backing off while the server is away, and logging an outage once and the
// recovery once. It delivers only labels it read whole from the server, never
// a partial or guessed set. It does not decide what labels mean, which
// policy follows from them or what stays in force while the server is away:
// package daemon does.
package kube
