package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with this
// serial number, and its key.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "lbd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAPIOverTLS: with tls_cert_file/tls_key_file the API is HTTPS only;
// the CLI reaches it with --ca-file; a renewed certificate in place is
// served after SIGHUP, without a restart.
func TestAPIOverTLS(t *testing.T) {
	l := newDaemonLab(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	writeCert(t, certFile, keyFile, 1)
	d := l.lbd("serve", "--interface", l.lbIf, "--xdp-mode", "native", "--gateway-mac", "02:00:00:00:00:99",
		"--listen", l.listen, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--state-dir", l.stateDir,
		"--token-file", filepath.Join(l.stateDir, "token"), "--log-format", "json",
		"--pin-dir", l.pinDir, "--max-flows", "4096", "--max-vips", "16", "--max-reals", "64", "--tracer", "off")
	logs := &syncBuffer{}
	d.Stderr = logs
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.ProcessState == nil {
			_ = d.Process.Kill()
			_ = d.Wait()
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	status := func(server string, extra ...string) (string, error) {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--server", server, "--token-file", filepath.Join(l.stateDir, "token"), "status", "-o", "json"}, extra...))
		err := root.Execute()
		return out.String(), err
	}
	var out string
	var err error
	for i := 0; ; i++ {
		if out, err = status("https://"+l.listen, "--ca-file", certFile); err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("lbd status over TLS: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out, `"interface": "`+l.lbIf+`"`) {
		t.Errorf("status over TLS:\n%s", out)
	}
	if _, err := status("http://" + l.listen); err == nil {
		t.Error("plain HTTP answered on the TLS listener")
	}
	if _, err := status("https://" + l.listen); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("an untrusted certificate was accepted: %v", err)
	}
	serial := func() int64 {
		c, err := tls.Dial("tcp", l.listen, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	writeCert(t, certFile, keyFile, 2)
	if err := d.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(logs.String(), "reloaded the API's TLS certificate"); i++ {
		if i == 100 {
			t.Fatal("no certificate reload logged")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := serial(); s != 2 {
		t.Errorf("serial after SIGHUP %d, want 2 (the renewed certificate)", s)
	}
	stop(t, d)
}
