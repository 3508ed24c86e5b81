package etcdtest

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/pki"
)

// TLSFiles are the PEM files of a test PKI for etcd: a CA, a server
// certificate for 127.0.0.1 and a client certificate, all signed by it.
type TLSFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// NewTLS writes a new test PKI to t's temporary directory.
func NewTLS(t testing.TB) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("etcdtest CA", now)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerCert([]string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := pki.KeyPEM(srv.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	cliKey, csr, err := pki.NewCSR("etcd-client")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.SignCSR(csr, "etcd-client", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.crt"), ServerCert: filepath.Join(dir, "server.crt"),
		ServerKey: filepath.Join(dir, "server.key"), ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key")}
	for path, data := range map[string][]byte{
		f.CA:         ca.CertPEM(),
		f.ServerCert: pki.CertPEM(srv.Leaf),
		f.ServerKey:  srvKey,
		f.ClientCert: pki.CertPEM(cli),
		f.ClientKey:  cliKey,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// ClientConfig is a client's TLS configuration for the members: the CA,
// and the client certificate when withCert.
func (f *TLSFiles) ClientConfig(withCert bool) (*tls.Config, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("etcdtest: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
