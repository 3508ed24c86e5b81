// Package pki is the manager's certificate authority: an ECDSA P-256 CA
// created on the manager's first start, the server certificates it signs
// for the manager's addresses, and the client certificates it signs for
// agents that join. A client certificate names its host in its subject,
// CN=host:NAME, and nothing else about it matters to the manager.
//
// The package is pure crypto and encoding; where the CA is kept (the
// manager keeps it in its store, so that several managers share it) is
// the caller's business.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"regexp"
	"strings"
	"time"
)

// Validities of what the CA signs.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	ClientValidity = 30 * 24 * time.Hour // agents renew at two thirds
)

// HostPrefix begins the common name of every agent certificate.
const HostPrefix = "host:"

var hostRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// ValidHost checks a host name: lowercase letters, digits, '-' and '.',
// beginning and ending with a letter or digit, at most 253 characters.
func ValidHost(name string) error {
	if !hostRE.MatchString(name) {
		return fmt.Errorf("pki: host name %q: want lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit, at most 253 characters", name)
	}
	return nil
}

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA named name.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Bulkhead"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and PEM private key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("pki: the CA certificate is not a CA")
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "EC PRIVATE KEY" {
		return nil, errors.New("pki: CA key: want a PEM block \"EC PRIVATE KEY\"")
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("pki: the CA key does not belong to the CA certificate")
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Hash returns "sha256:HEX" of the CA certificate, which a join token
// carries so that a new agent can trust the manager.
func (ca *CA) Hash() string { return CertHash(ca.Cert) }

// CertHash returns "sha256:HEX" of a certificate's DER.
func CertHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CertPEM returns the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM returns the CA private key in PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	return KeyPEM(ca.Key)
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ServerCert signs a server certificate, with a new key, for names: IP
// addresses and DNS names.
func (ca *CA) ServerCert(names []string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: generate server key: %w", err)
	}
	serial, err := NewSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "bulkhead-manager", Organization: []string{"Bulkhead"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: sign server certificate for %v: %w", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: parse server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// SignCSR checks a PEM certificate request and signs a client certificate
// for host, valid for validity from now. The request's subject must be
// empty or CN=host:HOST; the certificate's subject is CN=host:HOST.
func (ca *CA) SignCSR(csrPEM []byte, host string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if err := ValidHost(host); err != nil {
		return nil, err
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: csr: want a PEM block \"CERTIFICATE REQUEST\"")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: csr: signature does not verify: %w", err)
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != HostPrefix+host {
		return nil, fmt.Errorf("pki: csr: subject CN=%q, but this token is for CN=%q", cn, HostPrefix+host)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: HostPrefix + host, Organization: []string{"Bulkhead agents"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for host %s: %w", host, err)
	}
	return x509.ParseCertificate(der)
}

// HostOf returns the host a client certificate names (CN=host:NAME).
func HostOf(cert *x509.Certificate) (string, error) {
	host, ok := strings.CutPrefix(cert.Subject.CommonName, HostPrefix)
	if !ok {
		return "", fmt.Errorf("pki: certificate CN=%q does not name a host (want CN=%sNAME)", cert.Subject.CommonName, HostPrefix)
	}
	if err := ValidHost(host); err != nil {
		return "", err
	}
	return host, nil
}

// Serial returns a certificate's serial number as the manager records it:
// lowercase hex.
func Serial(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// NewSerial returns a random positive 128-bit serial number.
func NewSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// CertPEM encodes a certificate in PEM.
func CertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// ParseCertificate reads the first PEM certificate of data.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("pki: want a PEM block \"CERTIFICATE\"")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate: %w", err)
	}
	return cert, nil
}

// KeyPEM encodes an ECDSA private key in PEM ("EC PRIVATE KEY").
func KeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// NewCSR makes what an agent sends to join: a new P-256 key (PEM) and a
// certificate request for CN=host:HOST (PEM).
func NewCSR(host string) (keyPEM, csrPEM []byte, err error) {
	if err := ValidHost(host); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: HostPrefix + host},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: certificate request for host %s: %w", host, err)
	}
	keyPEM, err = KeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
