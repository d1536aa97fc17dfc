// Package kv is a persistent, replicated key-value store. The server lives
// in cmd/kvserver; see README.md and docs/ for the architecture.
package kv
