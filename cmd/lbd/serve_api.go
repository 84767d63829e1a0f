package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"

	"github.com/lbd-dev/lbd/api"
)

// apiConfig is the REST API's part of lbd serve's configuration
// (inlined into serveConfig: YAML keys sit at the top level).
type apiConfig struct {
	// InsecureListen lets the API listen in plain HTTP on an address
	// other than loopback: bearer tokens then cross the network in
	// clear.
	InsecureListen bool `yaml:"insecure_listen"`
	// TrustedProxies are the addresses or prefixes of reverse proxies
	// whose X-Forwarded-For the request log believes.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MaxEventStreams caps the open /api/v1/events streams.
	MaxEventStreams int `yaml:"max_event_streams"`
}

func defaultAPIConfig() apiConfig { return apiConfig{MaxEventStreams: api.DefaultMaxEventStreams} }

func (c *apiConfig) bindFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&c.InsecureListen, "insecure-listen", c.InsecureListen, "let the API listen in plain HTTP on a non-loopback address (tokens cross the network in clear)")
	fs.StringSliceVar(&c.TrustedProxies, "trusted-proxy", c.TrustedProxies, "address or prefix of a reverse proxy whose X-Forwarded-For the request log believes (repeatable; default: none, the log gives the socket's peer)")
	fs.IntVar(&c.MaxEventStreams, "max-event-streams", c.MaxEventStreams, "most /api/v1/events streams open at once (more get 503 with Retry-After)")
}

// validate checks the API settings; listen is the API's address (a unix
// socket, "unix:/path", is never refused), tls whether it speaks TLS (then
// any address will do).
func (c apiConfig) validate(listen string, tls bool) error {
	if !strings.HasPrefix(listen, "unix:") && !tls {
		addr, err := netip.ParseAddrPort(listen)
		if err != nil {
			return fmt.Errorf("listen address %q: want ip:port, e.g. 127.0.0.1:8080, or unix:/run/lbd/api.sock", listen)
		}
		if err := checkPlainListen(addr, c.InsecureListen); err != nil {
			return err
		}
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	if c.MaxEventStreams < 1 {
		return fmt.Errorf("max event streams %d: must be at least 1", c.MaxEventStreams)
	}
	return nil
}

// checkPlainListen refuses to serve the API in plain HTTP on an address
// other than loopback unless the operator said so (--insecure-listen):
// anyone on the path would read the bearer token.
func checkPlainListen(addr netip.AddrPort, insecure bool) error {
	if addr.Addr().Unmap().IsLoopback() || insecure {
		return nil
	}
	return fmt.Errorf("listen address %s is not a loopback address: the API speaks plain HTTP, so its bearer token would cross the network in clear; "+
		"give the API a certificate (--tls-cert-file and --tls-key-file), listen on a unix socket (unix:/run/lbd/api.sock) or on 127.0.0.1 behind an SSH tunnel or a TLS reverse proxy, or pass --insecure-listen (insecure_listen: true) to accept the risk", addr)
}

// warnInsecureListen says loudly that the API is exposed in clear (tls:
// it is not).
func (c apiConfig) warnInsecureListen(listen string, tls bool, log *slog.Logger) {
	if tls {
		return
	}
	if addr, err := netip.ParseAddrPort(listen); err == nil && !addr.Addr().Unmap().IsLoopback() {
		log.Warn("INSECURE: the API listens in plain HTTP on a non-loopback address: its bearer token crosses the network in clear", "address", listen)
	}
}

// trustedProxies parses TrustedProxies: addresses or prefixes.
func (c apiConfig) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q: want an address or a prefix such as 10.0.0.0/8", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// mustTrustedProxies is trustedProxies once validate has passed.
func (c apiConfig) mustTrustedProxies() []netip.Prefix {
	p, _ := c.trustedProxies()
	return p
}
