//go:build race

package cluster

// raceEnabled reports a -race build, in which moving a large value through
// raft costs several times what it does in production.
const raceEnabled = true
