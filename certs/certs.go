// Package certs reads TLS certificates for the server's and the raft
// port's listeners: a node's certificate and key, re-read when either file
// changes so that they can be rotated without a restart, and CA bundles.
//
// Invariant: once a pair has loaded, KeyPair.Get never fails: a pair that
// no longer loads (a rotation half done: the new certificate beside the
// old key) leaves the last good one in use, and is logged once per change
// of the files.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// KeyPair is a certificate and its key, read from files and read again
// when a file changes (looked at on each Get, that is on each handshake).
type KeyPair struct {
	certFile, keyFile string
	what              string // names the pair in logs ("raft transport")
	log               *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [2]fileStamp // the files as of cert
	failed [2]fileStamp // the files as of the last failed load, logged once
	warned time.Time    // when cert's coming expiry was last logged
	now    func() time.Time
}

// ExpiryWarning is how long before its certificate expires a key pair
// starts to say so in the log (once a day, from the handshakes that use
// it): most TLS outages are a certificate nobody renewed.
const ExpiryWarning = 14 * 24 * time.Hour

// expiryLogEvery spaces the warnings of a certificate about to expire.
const expiryLogEvery = 24 * time.Hour

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(name string) (fileStamp, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// LoadKeyPair reads the pair once, so that a wrong file stops start-up;
// what names it in the logs of later reloads.
func LoadKeyPair(certFile, keyFile, what string, log *slog.Logger) (*KeyPair, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &KeyPair{certFile: certFile, keyFile: keyFile, what: what, log: log, now: time.Now}
	if _, err := k.Get(); err != nil {
		return nil, err
	}
	return k, nil
}

// Get returns the pair as the files now hold it, or the last one that
// loaded.
func (k *KeyPair) Get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cs, cerr := stamp(k.certFile)
	ks, kerr := stamp(k.keyFile)
	now := [2]fileStamp{cs, ks}
	if cerr == nil && kerr == nil && now != k.loaded {
		c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
		switch {
		case err == nil:
			if k.cert != nil {
				k.log.Info(k.what+": TLS certificate reloaded", "cert", k.certFile)
			}
			k.cert, k.loaded = &c, now
		case k.cert == nil:
			return nil, err
		case now != k.failed:
			k.failed = now
			k.log.Warn(k.what+": cannot load the changed TLS certificate; keeping the previous one", "cert", k.certFile, "key", k.keyFile, "err", err)
		}
	}
	if k.cert == nil {
		return nil, fmt.Errorf("load %s: %w", k.certFile, errors.Join(cerr, kerr))
	}
	k.checkExpiry()
	return k.cert, nil
}

// checkExpiry logs, at most once per expiryLogEvery, that the certificate
// in use expires within ExpiryWarning or has expired.
func (k *KeyPair) checkExpiry() {
	leaf := k.cert.Leaf // parsed by tls.LoadX509KeyPair
	if leaf == nil {
		return
	}
	now := k.now()
	left := leaf.NotAfter.Sub(now)
	if left > ExpiryWarning || (!k.warned.IsZero() && now.Sub(k.warned) < expiryLogEvery) {
		return
	}
	k.warned = now
	if left <= 0 {
		k.log.Error(k.what+": TLS certificate has expired; clients and peers that verify it refuse to connect: renew it (the files are read again when they change)",
			"cert", k.certFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	k.log.Warn(k.what+": TLS certificate expires soon: renew it (the files are read again when they change)",
		"cert", k.certFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Minute).String())
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	return pool, nil
}
