package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// ServeReal is a lab real's server, run (by `lbd lab real-server`) in the
// real's namespace until ctx ends. It listens on every address, so it
// answers for the VIPs on lo and for the real's own address alike:
//
//   - TCP HTTPPort: HTTP; every request gets the real's name as its body;
//   - TCP WhoPort: writes the name and a newline, then echoes each line,
//     so a long-lived connection can ask at any time who is serving it;
//   - UDP WhoPort: answers every datagram with the name, from the
//     address it was sent to.
func ServeReal(ctx context.Context, name string) error {
	who, err := net.Listen("tcp", ":"+strconv.Itoa(WhoPort))
	if err != nil {
		return fmt.Errorf("listen TCP %d: %w", WhoPort, err)
	}
	defer who.Close()
	// UDP: one socket per local address, not one on the wildcard. A
	// wildcard socket's answer takes the source address of the route to
	// the client (the real's own), and the client, which sent to the VIP,
	// drops it: DSR UDP servers must answer from the address they were
	// asked on.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list local addresses: %w", err)
	}
	var udps []net.PacketConn
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort(ipn.IP.String(), strconv.Itoa(WhoPort)))
		if err != nil {
			return fmt.Errorf("listen UDP %s port %d: %w", ipn.IP, WhoPort, err)
		}
		defer u.Close()
		udps = append(udps, u)
	}
	web, err := net.Listen("tcp", ":"+strconv.Itoa(HTTPPort))
	if err != nil {
		return fmt.Errorf("listen TCP %d: %w", HTTPPort, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s\n", name)
	})}
	go func() { _ = srv.Serve(web) }()
	defer srv.Close()

	for _, udp := range udps {
		go func() {
			buf := make([]byte, 65536)
			reply := []byte(name + "\n")
			for {
				_, from, err := udp.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = udp.WriteTo(reply, from)
			}
		}()
	}
	go func() {
		for {
			c, err := who.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
					return
				}
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s\n", sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}
