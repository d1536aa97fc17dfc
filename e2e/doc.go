// Package e2e holds end-to-end tests: they build the real kvserver binary,
// start it on loopback ports and drive it over TCP with raw pipe-protocol
// lines, the Go client and go-redis, as a user would.
package e2e
