package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore"
	"github.com/spf13/cobra"
)

// managerFlags are the flags of `bulkhead manager`.
type managerFlags struct {
	dataDir    string
	listen     string
	names      []string
	etcd       string
	etcdPrefix string
	etcdCA     string
	etcdCert   string
	etcdKey    string
	keyFile    string
	adopt      bool
	verbose    bool
}

// NewManagerCommand returns `bulkhead manager`: the management server.
func NewManagerCommand() *cobra.Command {
	var f managerFlags
	cmd := &cobra.Command{
		Use:   "manager [--data-dir DIR] [--listen ADDR] [--etcd URLS --etcd-prefix P]",
		Short: "Run the management server: the public API over HTTPS, for the CLI, the console and the agents",
		Long: `manager serves Bulkhead's one public API (JSON over HTTPS, TLS 1.3; see
api/openapi.yaml and docs/manager.md). It keeps everything in a store: by
default an embedded bbolt file in --data-dir; with --etcd, an etcd cluster
that several managers share (each under the same --etcd-prefix).

On its first start it creates its CA (shared through the store) and an
admin token, written to DATA-DIR/admin.token (0600); the CA certificate is
in DATA-DIR/ca.crt. The manager key, DATA-DIR/manager.key (0600), is the
secret outside the store that seals tokens and certificate records and
signs the audit head: managers that share an etcd must each be given a
copy of it (--key-file). Point the CLI at it with:

  bulkhead login --server https://ADDR --ca DATA-DIR/ca.crt --token-file DATA-DIR/admin.token`,
		Example: `  bulkhead manager --data-dir /var/lib/bulkhead --listen 127.0.0.1:8443
  bulkhead manager --data-dir /var/lib/bulkhead --listen 0.0.0.0:8443 --name manager.example.com \
      --etcd https://10.0.0.1:2379,https://10.0.0.2:2379 --etcd-prefix /bulkhead/prod/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runManager(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/bulkhead", "where the manager keeps its files (and the embedded store)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8443", "address to serve HTTPS on")
	fl.StringArrayVar(&f.names, "name", nil, "extra DNS name or address for the server certificate (repeatable)")
	fl.StringVar(&f.etcd, "etcd", "", "etcd endpoints, comma separated (default: the embedded store)")
	fl.StringVar(&f.etcdPrefix, "etcd-prefix", "/bulkhead/default/", "this cluster's key prefix in etcd")
	fl.StringVar(&f.etcdCA, "etcd-ca", "", "CA file to verify etcd with")
	fl.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate file for etcd")
	fl.StringVar(&f.etcdKey, "etcd-key", "", "client key file for etcd")
	fl.StringVar(&f.keyFile, "key-file", "", "the manager key (default DATA-DIR/manager.key; created with the store, shared by every manager of one store)")
	fl.BoolVar(&f.adopt, "adopt-unsealed-records", false, "trust and seal the tokens and certificate records of a store from before the manager key")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log debug messages")
	return cmd
}

func runManager(cmd *cobra.Command, f managerFlags) error {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return fmt.Errorf("manager: data directory: %w", err)
	}
	st, closeStore, err := openStore(cmd.Context(), f, log)
	if err != nil {
		return err
	}
	defer closeStore()
	ctx := cmd.Context()
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: f.dataDir, Listen: f.listen, Names: f.names, Logger: log,
		KeyFile: f.keyFile, AdoptRecords: f.adopt})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	// The first admin token is in the data directory of the manager that
	// first started on the store; name it only where it is.
	token := filepath.Join(f.dataDir, manager.AdminTokenFile)
	if m.AdminToken() == "" {
		token = "not in this data directory: the manager that first started on this store wrote it to its own"
	}
	fmt.Fprintf(out, "manager serving %s\n  CA:          %s\n  admin token: %s\n",
		m.URL(), filepath.Join(f.dataDir, manager.CAFile), token)
	<-ctx.Done()
	return m.Close()
}

// openStore opens the embedded store in the data directory, or etcd:
// then it fails within the dial timeout, with the cause, when no member
// answers, and the etcd client logs through log.
func openStore(ctx context.Context, f managerFlags, log *slog.Logger) (store.Store, func(), error) {
	if f.etcd == "" {
		st, err := boltstore.Open(filepath.Join(f.dataDir, "bulkhead.db"), boltstore.Options{})
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Close() }, nil
	}
	st, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: strings.Split(f.etcd, ","),
		CAFile: f.etcdCA, CertFile: f.etcdCert, KeyFile: f.etcdKey, Logger: log,
		Store: etcdstore.Options{Prefix: f.etcdPrefix}})
	if err != nil {
		return nil, nil, fmt.Errorf("manager: %w", err)
	}
	return st, func() { st.Close() }, nil
}
