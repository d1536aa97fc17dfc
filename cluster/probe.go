package cluster

import (
	"encoding/binary"
	"fmt"
)

// A liveness probe's answer (the payload of the frameClosed a member sends
// back, see tcpTransport.serve) tells peers what they must know of the
// member besides that it is up:
//
//	flags    1 byte: bit 0 = short of disk space (space.go), bit 1 =
//	         stopping (it is handing its leaderships over)
//	avail    u64 LE: bytes free where its data lives
//	maxKind  1 byte: the newest raft command kind it applies
//
// Older members send less: nothing (versions before the free-space
// guard) or flags and avail (the version that added cmdHash, which was
// then the newest kind). Parsers read the fields they know and ignore any
// that follow, so a later version may append more; older versions ignore
// flag bits they do not know.
const probeAnswerLen = 1 + 8 + 1

// probeAnswer is one member's answer to a liveness probe.
type probeAnswer struct {
	low     bool   // short of disk space: writes are refused cluster-wide
	leaving bool   // stopping: no leadership should be handed to it
	avail   uint64 // bytes free (0 from a member without a guard)
	maxKind byte   // newest command kind it applies; 0: not said
}

// encode returns the answer's payload.
func (a probeAnswer) encode() []byte {
	p := make([]byte, probeAnswerLen)
	if a.low {
		p[0] |= 1
	}
	if a.leaving {
		p[0] |= 2
	}
	binary.LittleEndian.PutUint64(p[1:], a.avail)
	p[9] = a.maxKind
	return p
}

// parseProbeAnswer reads an answer's payload, inferring what an older
// member's shorter answer leaves out.
func parseProbeAnswer(p []byte) probeAnswer {
	var a probeAnswer
	if len(p) < 9 {
		// Before the free-space guard, hence before cmdHash.
		a.maxKind = cmdForget
		return a
	}
	a.low, a.leaving, a.avail = p[0]&1 != 0, p[0]&2 != 0, binary.LittleEndian.Uint64(p[1:])
	a.maxKind = cmdHash
	if len(p) >= probeAnswerLen {
		a.maxKind = p[9]
	}
	return a
}

// localProbeAnswer is what this node answers a probe with.
func localProbeAnswer(g *spaceGuard, leaving bool, maxKind byte) probeAnswer {
	a := probeAnswer{maxKind: maxKind, leaving: leaving}
	if g != nil {
		a.low, a.avail = g.low.Load(), g.avail.Load()
	}
	return a
}

// requireKind returns an error unless every member applies raft commands
// of kind k. A member that does not stops applying at such an entry
// (errNewerCommand) until it is upgraded, so a version proposes a kind
// newer than its predecessors' only once every member runs it, as a
// rolling upgrade leaves them in the end. A member down now counts by its
// last answer; one not heard from since this node started is probed at
// once, and blocks the command if it does not answer, since it may run
// anything.
func (c *Cluster) requireKind(k byte, what string) error {
	v := c.view.Load()
	if v == nil {
		return fmt.Errorf("%s needs every member to run a kvserver that supports it, and this node has not listed the members yet; try again in a second", what)
	}
	for _, n := range v.nodes {
		if n.ID == c.nodeID {
			continue
		}
		kind, ok := v.kinds[n.ID]
		if !ok {
			var a probeAnswer
			if ok, a = probeMemberAnswer(c.tls, n.Raft); ok {
				kind = a.maxKind
			}
		}
		switch {
		case !ok:
			return fmt.Errorf("%s needs every member to run a kvserver that supports it: node %d has not answered since this node started, so its version is unknown", what, n.ID)
		case kind < k:
			return fmt.Errorf("%s needs every member to run a kvserver that supports it: node %d runs an older version; upgrade it first", what, n.ID)
		}
	}
	return nil
}
