package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// Conn is a TCP connection from a lab client to a WhoPort server: Real is
// the name the server gave when it answered.
type Conn struct {
	net.Conn
	Client string
	Real   string
	rd     *bufio.Reader
}

// Dial connects from client (index into Clients) to addr's WhoPort server
// and reads who answered.
func (l *Lab) Dial(client int, addr netip.Addr) (*Conn, error) {
	c := l.Clients[client]
	var nc net.Conn
	err := InNetns(c.Netns, func() error {
		var err error
		nc, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, WhoPort).String(), 3*time.Second)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect from %s to %s: %w", c.Name, addr, err)
	}
	conn := &Conn{Conn: nc, Client: c.Name, rd: bufio.NewReader(nc)}
	_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
	name, err := conn.rd.ReadString('\n')
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read the real's name from %s to %s: %w", c.Name, addr, err)
	}
	conn.Real = strings.TrimSpace(name)
	return conn, nil
}

// Ping sends a line and waits for its echo: the connection still reaches
// its real (a packet sent elsewhere would be reset).
func (c *Conn) Ping(msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return fmt.Errorf("%s→%s: write: %w", c.Client, c.Real, err)
	}
	got, err := c.rd.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s→%s: read: %w", c.Client, c.Real, err)
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("%s→%s: echo %q, want %q", c.Client, c.Real, got, msg)
	}
	return nil
}

// Counts are answers per real name.
type Counts map[string]int

// Total sums the counts.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// String lists the counts by name with shares.
func (c Counts) String() string {
	names := make([]string, 0, len(c))
	for k := range c {
		names = append(names, k)
	}
	sort.Strings(names)
	total := c.Total()
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "%s %d (%.1f%%)  ", k, c[k], 100*float64(c[k])/float64(max(total, 1)))
	}
	return strings.TrimSpace(b.String())
}

// ShortTCP opens perClient short connections from every client to addr's
// WhoPort server (clients in parallel, each one connection at a time),
// and counts who answered. Every connection must complete: the first
// failure is returned with the counts so far.
func (l *Lab) ShortTCP(addr netip.Addr, perClient int) (Counts, error) {
	return l.each(perClient, func(i int) (string, error) {
		c, err := l.Dial(i, addr)
		if err != nil {
			return "", err
		}
		return c.Real, c.Close()
	})
}

// UDPFlows sends, from every client, perClient flows (a new socket each)
// of datagrams datagrams of size bytes to addr's UDP WhoPort server, and
// counts answered datagrams per real. A flow whose datagrams were answered
// by more than one real is an error.
func (l *Lab) UDPFlows(addr netip.Addr, perClient, datagrams, size int) (Counts, error) {
	payload := make([]byte, size)
	counts := Counts{}
	var mu sync.Mutex
	// Sockets stay open until the end, so that no flow reuses an earlier
	// one's source port: every flow is a new 5-tuple.
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	_, err := l.each(perClient, func(i int) (string, error) {
		var conn net.Conn
		if err := InNetns(l.Clients[i].Netns, func() error {
			var err error
			conn, err = net.Dial("udp", netip.AddrPortFrom(addr, WhoPort).String())
			return err
		}); err != nil {
			return "", err
		}
		mu.Lock()
		open = append(open, conn)
		mu.Unlock()
		first := ""
		buf := make([]byte, 256)
		for k := range datagrams {
			if _, err := conn.Write(payload); err != nil {
				return "", err
			}
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				return "", fmt.Errorf("UDP from %s, datagram %d: %w", l.Clients[i].Name, k+1, err)
			}
			name := strings.TrimSpace(string(buf[:n]))
			if first == "" {
				first = name
			} else if name != first {
				return "", fmt.Errorf("UDP flow from %s moved from %s to %s", l.Clients[i].Name, first, name)
			}
			mu.Lock()
			counts[name]++
			mu.Unlock()
		}
		return "", nil
	})
	return counts, err
}

// each runs fn perClient times for every client (clients in parallel)
// and counts the names it returns ("" is not counted).
func (l *Lab) each(perClient int, fn func(client int) (string, error)) (Counts, error) {
	counts := Counts{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, len(l.Clients))
	for i := range l.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				name, err := fn(i)
				if err != nil {
					errc <- err
					return
				}
				if name != "" {
					mu.Lock()
					counts[name]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return counts, <-errc
}

func httpGet(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// RealByName finds a real's node by its name ("r1").
func (l *Lab) RealByName(name string) (Node, bool) {
	for _, r := range l.Reals {
		if r.Name == name {
			return r, true
		}
	}
	return Node{}, false
}
