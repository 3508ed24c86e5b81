package pki

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestCARoundTripAndSign(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(ca.Cert) {
		t.Fatal("CA changed in a round trip")
	}
	other, _ := NewCA("other", now)
	otherKey, _ := other.KeyPEM()
	if _, err := ParseCA(ca.CertPEM(), otherKey); err == nil {
		t.Fatal("a CA with another CA's key was accepted")
	}

	clientKey, csr, err := NewCSR("node-1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignCSR(csr, "node-1", now, ClientValidity)
	if err != nil {
		t.Fatal(err)
	}
	if host, err := HostOf(cert); err != nil || host != "node-1" {
		t.Fatalf("HostOf = %q, %v", host, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if _, err := tls.X509KeyPair(CertPEM(cert), clientKey); err != nil {
		t.Fatalf("key and certificate do not pair: %v", err)
	}
	// A request for another host's name is refused.
	if _, err := ca.SignCSR(csr, "node-2", now, ClientValidity); err == nil || !strings.Contains(err.Error(), "host:node-1") {
		t.Fatalf("CSR for node-1 signed for node-2: %v", err)
	}

	srv, err := ca.ServerCert([]string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("server certificate does not verify for 127.0.0.1: %v", err)
	}
}

func TestValidHost(t *testing.T) {
	for _, ok := range []string{"a", "node-1", "n1.example.com"} {
		if err := ValidHost(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "A", "a/b", "a b", strings.Repeat("a", 254)} {
		if err := ValidHost(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
