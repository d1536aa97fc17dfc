package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// joinRequest is what a new node asks a member for.
type joinRequest struct {
	ID       uint64
	Raft     string
	Client   string
	Password string // the member's requirepass, if any (cluster nodes share it)
}

// joinRefusedError is a member's ERROR reply to CLUSTER_JOIN (or AUTH).
type joinRefusedError struct {
	addr, msg string
}

func (e *joinRefusedError) Error() string {
	return fmt.Sprintf("join via %s refused: %s", e.addr, e.msg)
}

// transient reports a refusal worth retrying: the member could not reach a
// quorum or timed out, as opposed to refusing the node itself.
func (e *joinRefusedError) transient() bool {
	return strings.HasPrefix(e.msg, "cluster unavailable") || strings.HasPrefix(e.msg, "timeout")
}

// sendJoin asks the members at addrs, in order, to add the node, until one
// says OK or refuses it for good, retrying unreachable or unavailable
// members for up to wait.
func sendJoin(ctx context.Context, addrs []string, req joinRequest, wait time.Duration, log *slog.Logger) error {
	if len(addrs) == 0 {
		return errors.New("join: cluster.join lists no member")
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	backoff := 200 * time.Millisecond
	for {
		var last error
		for _, addr := range addrs {
			err := joinVia(ctx, addr, req)
			if err == nil {
				return nil
			}
			var refused *joinRefusedError
			if errors.As(err, &refused) && !refused.transient() {
				return err
			}
			log.Warn("join attempt failed", "via", addr, "err", err)
			last = err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("join: no member accepted the request: %w", last)
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// joinVia sends CLUSTER_JOIN to one member over the pipe protocol and
// reads its one-line reply.
func joinVia(ctx context.Context, addr string, req joinRequest) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("join via %s: %w", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReader(conn)
	exchange := func(line string) (string, error) {
		if _, err := conn.Write([]byte(line + "\n")); err != nil {
			return "", fmt.Errorf("join via %s: %w", addr, err)
		}
		reply, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("join via %s: read reply: %w", addr, err)
		}
		return strings.TrimRight(reply, "\r\n"), nil
	}
	check := func(reply string) error {
		if reply == "OK" {
			return nil
		}
		if msg, ok := strings.CutPrefix(reply, "ERROR|"); ok {
			return &joinRefusedError{addr: addr, msg: pipeUnescape(msg)}
		}
		return fmt.Errorf("join via %s: unexpected reply %q", addr, reply)
	}
	if req.Password != "" {
		reply, err := exchange("AUTH|" + pipeEscape(req.Password))
		if err != nil {
			return err
		}
		if err := check(reply); err != nil {
			return err
		}
	}
	reply, err := exchange("CLUSTER_JOIN|" + strconv.FormatUint(req.ID, 10) + "|" +
		pipeEscape(req.Raft) + "|" + pipeEscape(req.Client))
	if err != nil {
		return err
	}
	return check(reply)
}

// pipeEscape escapes a field for the pipe protocol.
func pipeEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '|':
			b.WriteString(`\|`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case 0:
			b.WriteString(`\0`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// pipeUnescape undoes pipeEscape; unknown escapes are kept as they are
// (this only renders a member's error message).
func pipeUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case '0':
			b.WriteByte(0)
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
