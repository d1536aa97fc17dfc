//go:build race

package cache

// raceEnabled reports a -race build, whose sync.Pool drops items at random
// (so allocation counts are not meaningful).
const raceEnabled = true
