package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// ClientConfig is the CLI's configuration file (default
// ~/.config/bulkhead/config.yaml, or $BULKHEAD_CONFIG): which manager to
// talk to and how. `bulkhead login` and `bulkhead up` write it.
//
//	server: https://127.0.0.1:8443
//	ca: /var/lib/bulkhead/ca.crt
//	token: bh_...
type ClientConfig struct {
	Server string `yaml:"server"`
	CA     string `yaml:"ca"`    // file with the manager's CA certificate
	Token  string `yaml:"token"` // an API token
}

// Environment variables the manager client honours, over the file.
const (
	configEnv = "BULKHEAD_CONFIG"
	serverEnv = "BULKHEAD_SERVER"
	tokenEnv  = "BULKHEAD_TOKEN"
)

// DefaultConfigPath is $BULKHEAD_CONFIG, else config.yaml in the user's
// configuration directory's bulkhead folder.
func DefaultConfigPath() string {
	if p := os.Getenv(configEnv); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = filepath.Join(os.Getenv("HOME"), ".config")
	}
	return filepath.Join(dir, "bulkhead", "config.yaml")
}

// LoadClientConfig reads a configuration file; a missing file is an
// empty configuration.
func LoadClientConfig(path string) (ClientConfig, error) {
	var c ClientConfig
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w (valid fields: server, ca, token)", path, err)
	}
	return c, nil
}

// Save writes the configuration, 0600 (it holds a token).
func (c ClientConfig) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// addServerFlags registers the flags that choose a manager.
func addServerFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.String("server", "", "the manager to talk to: https://HOST:PORT (default $"+serverEnv+", else the config file's)")
	pf.String("config", "", "the CLI's configuration file (default $"+configEnv+", else ~/.config/bulkhead/config.yaml)")
	pf.String("token", "", "API token (default $"+tokenEnv+", else the config file's)")
	pf.String("ca", "", "the manager's CA certificate file (default: the config file's)")
}

// serverConfig resolves flags, environment and file, in that order.
func serverConfig(cmd *cobra.Command) (ClientConfig, error) {
	flag := func(name string) string {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f.Value.String()
		}
		return ""
	}
	path := flag("config")
	if path == "" {
		path = DefaultConfigPath()
	}
	c, err := LoadClientConfig(path)
	if err != nil {
		return c, err
	}
	for _, o := range []struct {
		dst       *string
		flag, env string
	}{{&c.Server, "server", serverEnv}, {&c.Token, "token", tokenEnv}, {&c.CA, "ca", ""}} {
		if v := flag(o.flag); v != "" {
			*o.dst = v
		} else if o.env != "" && os.Getenv(o.env) != "" {
			*o.dst = os.Getenv(o.env)
		}
	}
	return c, nil
}

// serverConfigured reports whether a manager is named (by flag,
// environment or config file): apply, delete and get go to it then.
func serverConfigured(cmd *cobra.Command) bool {
	c, err := serverConfig(cmd)
	return err == nil && c.Server != ""
}

// serverClient is a client for the manager the flags, environment or
// config file name.
func serverClient(cmd *cobra.Command) (*client.Client, error) {
	c, err := serverConfig(cmd)
	if err != nil {
		return nil, err
	}
	if c.Server == "" {
		return nil, fmt.Errorf("no manager named: pass --server https://HOST:PORT, set $%s, or run `bulkhead login`", serverEnv)
	}
	cfg := client.Config{URL: c.Server, Token: c.Token}
	if c.CA != "" {
		if cfg.CA, err = os.ReadFile(c.CA); err != nil {
			return nil, fmt.Errorf("the manager's CA: %w", err)
		}
	}
	return client.New(cfg)
}
