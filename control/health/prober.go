package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NetProber probes over the network from this host.
type NetProber struct{}

// Probe runs one probe of t as s says; ctx bounds it (the spec's timeout).
func (NetProber) Probe(ctx context.Context, t Target, s Spec) Result {
	start := time.Now()
	port := s.Port
	if port == 0 {
		port = t.Dest.Port()
	}
	dest := netip.AddrPortFrom(t.Dest.Addr(), port)
	if t.Mark == 0 {
		dest = netip.AddrPortFrom(t.Real, port)
	}
	d := &net.Dialer{Control: markControl(t.Mark)}
	var reason string
	var err error
	switch s.Type {
	case TCP:
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", dest.String()); err == nil {
			c.Close()
			reason = "connected"
		}
	case HTTP, HTTPS:
		reason, err = probeHTTP(ctx, d, dest, t, s)
	case UDP:
		reason, err = probeUDP(ctx, d, dest)
	default:
		err = fmt.Errorf("no probe for type %q", s.Type)
	}
	r := Result{OK: err == nil, Reason: reason, At: start, Duration: time.Since(start)}
	if err != nil {
		r.Reason = shortError(err)
	}
	return r
}

// markControl sets SO_MARK on the probe's socket: the mark the TC program
// encapsulates to the real by.
func markControl(mark uint32) func(string, string, syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x (needs CAP_NET_ADMIN): %w", mark, serr)
		}
		return nil
	}
}

func probeHTTP(ctx context.Context, d *net.Dialer, dest netip.AddrPort, t Target, s Spec) (string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, dest.String())
		},
		DisableKeepAlives: true,
		// The real is reached by the VIP's address, which its certificate
		// need not name: a health check tests liveness, not identity.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
	}
	defer tr.CloseIdleConnections()
	scheme := "http"
	if s.Type == HTTPS {
		scheme = "https"
	}
	// The Host is the VIP, as a client's would be.
	url := fmt.Sprintf("%s://%s%s", scheme, t.Dest.String(), s.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "lbd-health-check")
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != s.ExpectStatus {
		return "", fmt.Errorf("HTTP status %d, want %d", resp.StatusCode, s.ExpectStatus)
	}
	return fmt.Sprintf("HTTP %d", resp.StatusCode), nil
}

// probeUDP sends a datagram and wants any answer: silence is a failure
// (the real cannot be told from a black hole), and so is an ICMP error.
func probeUDP(ctx context.Context, d *net.Dialer, dest netip.AddrPort) (string, error) {
	c, err := d.DialContext(ctx, "udp", dest.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	if _, err := c.Write([]byte("lbd-health-check\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", errors.New("no answer")
		}
		return "", err
	}
	return fmt.Sprintf("%d-byte answer", n), nil
}

// shortError drops the address noise from dial errors ("dial tcp
// 192.0.2.1:80: connect: connection refused" → "connect: connection
// refused") and names timeouts plainly.
func shortError(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	return err.Error()
}
