package bench

import "fmt"

// stride and first describe the keys this client may write: all keys when
// not verifying, else those ≡ id mod clients (ownKey).
func (c *client) stride() (cl, first uint64) {
	if c.r.cfg.Verify {
		return uint64(c.r.cfg.Clients), uint64(c.id)
	}
	return 1, 0
}

// owned is how many keys the client may write.
func (c *client) owned() uint64 {
	cl, first := c.stride()
	return (c.r.cfg.Keys - first + cl - 1) / cl
}

// prefillCount is how many keys the client writes in the prefill.
func (c *client) prefillCount() uint64 {
	n, cl, id := c.r.cfg.Keys, uint64(c.r.cfg.Clients), uint64(c.id)
	if id >= n {
		return 0
	}
	return (n - id + cl - 1) / cl
}

// nthKey returns the j-th owned key after k (a batch's keys, wrapping).
func (c *client) nthKey(k uint64, j int) uint64 {
	cl, first := c.stride()
	p := (k/cl + uint64(j)) % c.owned()
	return p*cl + first
}

func (c *client) ownIndex(k uint64) uint64 {
	cl, _ := c.stride()
	return k / cl
}

// verify checks a get's reply against the version this client last wrote
// before sending it; it returns a description of a mismatch, or "".
func (c *client) verify(s *slot, rep reply) string {
	want := s.expect
	if want == verUnknown || want == verInDoubt {
		return ""
	}
	var ok bool
	if want == verDeleted {
		ok = rep.kind == replyNotFound
	} else if rep.kind == replyValue {
		c.valBuf = c.r.values.stamped(c.valBuf[:0], s.key, want)
		ok = string(c.valBuf) == string(rep.val)
	}
	if ok || c.last[c.ownIndex(s.key)] == verInDoubt {
		// A write to the key sent before this get failed after the get
		// was sent, so the get could not know what to expect.
		return ""
	}
	var key [keyLen]byte
	k := appendKey(key[:0], s.key)
	if want == verDeleted {
		return fmt.Sprintf("verify: get %s after delete returned %s", k, describeKind(rep))
	}
	wantLen := len(c.r.values.value(s.key, want))
	if v, ok := stampVersion(rep.val); ok && rep.kind == replyValue && v == want {
		return fmt.Sprintf("verify: get %s returned a %d-byte value stamped with version %d but not that version's bytes (%s), want the %d-byte value",
			k, len(rep.val), want, quoteHead(rep.val[stampLen:]), wantLen)
	}
	return fmt.Sprintf("verify: get %s returned %s, want the %d-byte value of version %d",
		k, describeKind(rep), wantLen, want)
}

// describeKind describes a reply to a get. A value's version is read from
// its stamp and written in decimal, as the wanted version is: quoting the
// stamp's hex digits beside a decimal version made them look unrelated.
func describeKind(rep reply) string {
	switch rep.kind {
	case replyNotFound:
		return "not found"
	case replyValue:
		if v, ok := stampVersion(rep.val); ok {
			return fmt.Sprintf("a %d-byte value of version %d", len(rep.val), v)
		}
		return fmt.Sprintf("a %d-byte value %s, with no version stamp", len(rep.val), quoteHead(rep.val))
	}
	return "an unexpected reply"
}

// quoteHead quotes the first bytes of v, enough to recognise it.
func quoteHead(v []byte) string {
	if len(v) > 24 {
		return fmt.Sprintf("%q...", v[:24])
	}
	return fmt.Sprintf("%q", v)
}

func describeReply(op Op, rep reply) string {
	if rep.kind == replyError {
		return fmt.Sprintf("%v: server error: %s", op, rep.val)
	}
	if len(rep.val) > 64 {
		rep.val = rep.val[:64]
	}
	return fmt.Sprintf("%v: unexpected reply %v %q", op, rep.kind, rep.val)
}

// fail counts a failed request: in the run's total always, and in its
// operation's row and its second of the timeline when it was measured, so
// that they count the same requests as the successes beside them. A failed
// write leaves its keys in doubt, which -verify then stops checking.
func (c *client) fail(s *slot, now int64, msg string) {
	if s.measured {
		c.errs[s.op]++
		c.intervalAt(now).errs++
	}
	if c.r.cfg.Verify && s.op.writes() {
		n := 1
		if s.op == OpBatch {
			n = c.r.cfg.BatchSize
		}
		for j := range n {
			c.last[c.ownIndex(c.nthKey(s.key, j))] = verInDoubt
		}
	}
	c.r.addError(msg)
}
