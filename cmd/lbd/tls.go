package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
)

// certReloader serves the API's TLS certificate from files, re-read on
// SIGHUP (reload.go) so that a renewed certificate takes effect without a
// restart; a bad pair on reload keeps the running one.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func (r *certReloader) load() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate (tls_cert_file %s, tls_key_file %s): %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&c)
	return nil
}

// listenTLS wraps the API listener in TLS when cfg names a certificate;
// it returns the reloader (nil without TLS).
func listenTLS(ln net.Listener, cfg serveConfig) (net.Listener, *certReloader, error) {
	if cfg.TLSCertFile == "" {
		return ln, nil, nil
	}
	r := &certReloader{certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile}
	if err := r.load(); err != nil {
		return nil, nil, err
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
	}
	return tls.NewListener(ln, tc), r, nil
}
