package lsm

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lni/vfs"
)

const (
	fullChildDirEnv   = "LSM_FULL_CHILD_DIR"
	fullChildRoundEnv = "LSM_FULL_CHILD_ROUND"
)

// fullValue is the only value ever written for key: 4 KiB that do not
// compress much (letters drawn from a generator seeded by the key), so
// that the disk fills with tables as well as WALs.
func fullValue(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	b := []byte(crashValue(key) + "|")
	for len(b) < 4<<10 {
		b = append(b, byte('a'+rng.IntN(26)))
	}
	return string(b)
}

func fullDiskOptions() Options {
	return Options{FS: vfs.Default, MemtableBytes: 1 << 20, BlockCacheBytes: testCacheBytes, Sync: SyncAlways}
}

// TestFullDiskCrashChild is the child process of TestFullDiskCrashKill (it
// does nothing in a normal run): it opens the DB (on a full disk: degraded)
// and writes until it is killed, printing "ACK key" once a put returned.
// A refused put is retried after a Flush, which retries the background
// flush at once.
func TestFullDiskCrashChild(t *testing.T) {
	dir := os.Getenv(fullChildDirEnv)
	if dir == "" {
		t.Skip("helper process for TestFullDiskCrashKill")
	}
	round := os.Getenv(fullChildRoundEnv)
	d, err := Open(dir, fullDiskOptions())
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "OPEN health=%v\n", d.Health())
	out.Flush()
	// A few hundred kilobytes a round, so that the disk the test frees is
	// not filled again by the writes after it.
	lastRefusal := ""
	for i := 0; i < 100; {
		key := fmt.Sprintf("r%s-%06d", round, i)
		err := d.Put([]byte(key), []byte(fullValue(key)))
		switch {
		case err == nil:
			fmt.Fprintf(out, "ACK %s\n", key)
			out.Flush()
			i++
		case errors.Is(err, ErrOutcomeUnknown):
			fmt.Fprintf(out, "ERROR %v\n", err)
			out.Flush()
			os.Exit(4)
		default: // refused: nothing was written
			if err.Error() != lastRefusal {
				lastRefusal = err.Error()
				fmt.Fprintf(out, "REFUSED %v\n", err)
				out.Flush()
			}
			d.Flush()
			time.Sleep(5 * time.Millisecond)
		}
	}
	fmt.Fprintln(out, "DONE")
	out.Flush()
	select {} // until killed
}

// TestFullDiskCrashKill restarts a process on a full disk (a tmpfs) again
// and again and kills it (SIGKILL) at random moments: during Open, while
// it serves from the replayed WALs refusing writes, and, in the rounds
// where space is freed under it, while its background flush writes the
// replayed memtables, switches the manifest and deletes the old WALs, or
// once it writes again. After each kill the DB must open (on the disk as
// it is, full or not) with every acknowledged write and nothing else.
func TestFullDiskCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	disk := smallDisk(t, 48<<20)
	dir := filepath.Join(disk, "db")
	filler := filepath.Join(disk, "filler")
	// Freed with the filler in some rounds: room for the flush and more.
	reserve := filepath.Join(disk, "reserve")
	writeReserve := func() {
		if err := os.WriteFile(reserve, make([]byte, 8<<20), 0o644); err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
	}
	present := map[string]bool{}
	writeReserve()

	d := mustOpen(t, dir, fullDiskOptions())
	for i := range 2000 { // 8 MiB
		key := fmt.Sprintf("setup-%06d", i)
		mustPut(t, d, key, fullValue(key))
		present[key] = true
	}
	d.Close() // the last memtable's writes are only in its WAL
	fillDisk(t, filler)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	const rounds = 15
	for round := range rounds {
		free := round%3 == 2
		cmd, lines := startChild(t, "TestFullDiskCrashChild", fullChildDirEnv+"="+dir, fmt.Sprintf("%s=%d", fullChildRoundEnv, round))
		var kill, freeAt <-chan time.Time
		if round%4 == 0 {
			// While the child starts or opens.
			kill = time.After(time.Duration(rng.IntN(40)) * time.Millisecond)
		}
		giveUp := time.After(30 * time.Second)
		var acks []string
		opened, lastRefusal := "", ""
	collect:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break collect
				}
				switch {
				case strings.HasPrefix(line, "OPEN "):
					opened = line
					if kill == nil && free {
						freeAt = time.After(time.Duration(rng.IntN(200)) * time.Millisecond)
					} else if kill == nil {
						kill = time.After(time.Duration(rng.IntN(300)) * time.Millisecond)
					}
				case strings.HasPrefix(line, "REFUSED "):
					lastRefusal = line
				case strings.HasPrefix(line, "ACK "):
					acks = append(acks, strings.TrimPrefix(line, "ACK "))
				case strings.HasPrefix(line, "OPEN-ERROR"), strings.HasPrefix(line, "ERROR"):
					cmd.Process.Kill()
					t.Fatalf("round %d: child: %s", round, line)
				}
			case <-freeAt:
				freeAt = nil
				for _, f := range []string{filler, reserve} {
					if err := os.Remove(f); err != nil {
						t.Fatal(err)
					}
				}
				// Within the flush that follows, or the writes after it.
				wait := time.Duration(rng.IntN(300)) * time.Millisecond
				if rng.IntN(2) == 0 {
					wait = time.Duration(rng.IntN(15000)) * time.Microsecond
				}
				kill = time.After(wait)
			case <-kill:
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				kill = nil
			case <-giveUp:
				cmd.Process.Kill()
				t.Fatalf("round %d: child neither killed nor done", round)
			}
		}
		if err := cmd.Wait(); err == nil {
			t.Fatalf("round %d: child exited by itself", round)
		}
		for _, k := range acks {
			present[k] = true
		}
		t.Logf("round %d: free=%v opened=%.60q acks=%d %.300s", round, free, opened, len(acks), lastRefusal)

		d, err := Open(dir, fullDiskOptions())
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		for key := range present {
			v, err := d.Get([]byte(key))
			if err != nil || string(v) != fullValue(key) {
				d.Close()
				t.Fatalf("round %d: acknowledged %s: %.30q, %v", round, key, v, err)
			}
		}
		it := d.NewIterator(nil, nil)
		for ok := it.First(); ok; ok = it.Next() {
			if string(it.Value()) != fullValue(string(it.Key())) {
				t.Fatalf("round %d: %s holds %.30q, never written", round, it.Key(), it.Value())
			}
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: reopened, health %.100v", round, d.Health())
		if err := d.Close(); err != nil {
			t.Logf("round %d: close: %v", round, err)
		}
		if free {
			writeReserve()
			fillDisk(t, filler)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes survived SIGKILL on a full disk", rounds, len(present))
}
