package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/spf13/cobra"
)

func auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read, export and verify the manager's hash-chained audit log (admin, auditor)"}
	cmd.AddCommand(auditLogCommand(), auditHeadCommand(), auditExportCommand(), auditVerifyCommand())
	return cmd
}

func auditLogCommand() *cobra.Command {
	var from uint64
	var limit int
	cmd := &cobra.Command{
		Use: "log", Short: "Print audit entries, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			list, err := c.Audit(cmd.Context(), from, limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tREVISION\tACTOR\tACTION\tOBJECT")
			for _, e := range list.Items {
				actor := e.Actor.Kind + ":" + e.Actor.Name
				if e.Actor.Role != "" {
					actor += " (" + e.Actor.Role + ")"
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Revision, actor, e.Action, e.Object)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if list.Next != 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "(more entries: --from %d)\n", list.Next)
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 1, "first entry")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many entries")
	return cmd
}

func auditHeadCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "head [-o FILE]",
		Short: "Get the head of the audit log, signed by the manager; keep it to verify the log against later",
		Long: `head asks the manager for the head of its audit log (the last entry's
number and hash), signed by the manager's audit key, and writes it as JSON
(to FILE with -o). Keep it somewhere the manager's store is not: a later
` + "`bulkhead audit verify --head FILE`" + ` fails if the log was cut short
before it or rewritten up to it.`,
		Example: `  bulkhead audit head -o /secure/bulkhead-head-$(date +%F).json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			h, err := signedHead(cmd.Context(), c)
			if err != nil {
				return err
			}
			if err := writeJSONOut(cmd, out, h); err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "audit head %d:%s signed by key %s written to %s\n", h.Seq, h.Hash, h.KeyID, out)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file (default: standard output)")
	return cmd
}

func auditExportCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export [-o FILE]",
		Short: "Export the audit log with its signed head, to verify and keep away from the manager",
		Long: `export writes the whole audit log up to a head the manager signs, as one
JSON document {head, entries}. ` + "`bulkhead audit verify --log FILE`" + ` checks it
without the manager; its head also serves as --head for a later verify of
the live log.`,
		Example: `  bulkhead audit export -o audit-2026-12.json
  bulkhead audit verify --log audit-2026-12.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			h, err := signedHead(cmd.Context(), c)
			if err != nil {
				return err
			}
			entries, err := fetchLog(cmd.Context(), c, h.Seq)
			if err != nil {
				return err
			}
			exp := audit.Export{Head: h, Entries: entries}
			if err := writeJSONOut(cmd, out, exp); err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "%d audit entries to head %d:%s (key %s) written to %s\n", len(entries), h.Seq, h.Hash, h.KeyID, out)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file (default: standard output)")
	return cmd
}

func auditVerifyCommand() *cobra.Command {
	var anchor, headFile, logFile string
	cmd := &cobra.Command{
		Use:   "verify [--anchor SEQ:HASH] [--head FILE] [--log FILE]",
		Short: "Verify the audit chain; exit 1 if it was tampered with",
		Long: `verify checks the audit chain: every entry's hash, every link to the entry
before, and that the chain reaches its head.

Without --head or --log the manager checks, against the head its store
keeps, the head it kept itself outside the store, and --anchor (a head
printed by an earlier verify) if given.

With --head FILE (from ` + "`bulkhead audit head`" + ` or ` + "`export`" + `) this command checks,
itself: the head's signature, that the manager still signs with the same
key, and that the log the manager serves passes through that head. A log
cut short before it, or rewritten and re-sealed up to it, fails. With
--log FILE it checks an exported log instead, without the manager (and
against --head if given, else the export's own head).

docs/security.md says what a verify proves and what it cannot.`,
		Example: `  bulkhead audit verify
  bulkhead audit verify --head /secure/bulkhead-head-2026-12-01.json
  bulkhead audit verify --log audit-2026-12.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if headFile != "" || logFile != "" {
				if anchor != "" {
					return errors.New("--anchor is for the manager's verify; with --head or --log, the head file is the anchor")
				}
				return verifyLocally(cmd, headFile, logFile)
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			var v api.AuditVerify
			path := "/v1/audit/verify"
			if anchor != "" {
				path += "?anchor=" + anchor
			}
			if err := c.Do(cmd.Context(), "GET", path, nil, &v); err != nil {
				return err
			}
			if !v.OK {
				fmt.Fprintf(cmd.ErrOrStderr(), "audit log BROKEN after %d entries: %s\n", v.Entries, v.Problem)
				return &ExitError{Code: 1}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit log verified: %d entries; head %s (keep it: --anchor, or better bulkhead audit head -o FILE)\n", v.Entries, v.Head)
			return nil
		},
	}
	cmd.Flags().StringVar(&anchor, "anchor", "", "a head (SEQ:HASH) seen earlier, to check the log still passes through it")
	cmd.Flags().StringVar(&headFile, "head", "", "a signed head (audit head or audit export), to check the log against here, not on the manager")
	cmd.Flags().StringVar(&logFile, "log", "", "an exported log (audit export) to verify instead of the manager's")
	return cmd
}

// verifyLocally is verify --head/--log: the checks run here, trusting the
// manager for nothing but the entries it serves.
func verifyLocally(cmd *cobra.Command, headFile, logFile string) error {
	var head audit.SignedHead
	var entries []audit.Entry
	source := "the manager's log"
	if logFile != "" {
		exp, err := readExport(logFile)
		if err != nil {
			return err
		}
		head, entries, source = exp.Head, exp.Entries, logFile
	}
	if headFile != "" {
		h, err := readHead(headFile)
		if err != nil {
			return err
		}
		head = h
	}
	if err := head.Check(); err != nil {
		return fmt.Errorf("%s: %w", orName(headFile, logFile), err)
	}
	if logFile == "" {
		c, err := serverClient(cmd)
		if err != nil {
			return err
		}
		now, err := signedHead(cmd.Context(), c)
		var ce *client.Error
		switch {
		case errors.As(err, &ce) && ce.Status == http.StatusConflict:
			// The manager found the log broken itself; check it here anyway.
			fmt.Fprintf(cmd.ErrOrStderr(), "the manager signs no head: %v\n", err)
			now.KeyID = head.KeyID
		case err != nil:
			return err
		}
		if now.KeyID != head.KeyID {
			fmt.Fprintf(cmd.ErrOrStderr(), "audit head %s was signed by key %s, but the manager signs with key %s: the manager key was replaced, or the head is not this manager's\n", headFile, head.KeyID, now.KeyID)
			return &ExitError{Code: 1}
		}
		if entries, err = fetchLog(cmd.Context(), c, 0); err != nil {
			return err
		}
	}
	anchor := head.Head()
	if err := audit.Verify(entries, &anchor); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "audit log BROKEN (%s, %d entries, against head %d:%s signed %s by key %s): %v\n",
			source, len(entries), head.Seq, head.Hash, head.Time.Format(time.RFC3339), head.KeyID, err)
		return &ExitError{Code: 1}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "audit log verified: %s, %d entries, passes through head %d:%s signed %s by key %s\n",
		source, len(entries), head.Seq, head.Hash, head.Time.Format(time.RFC3339), head.KeyID)
	return nil
}

func orName(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func signedHead(ctx context.Context, c *client.Client) (audit.SignedHead, error) {
	var h api.AuditHead
	if err := c.Do(ctx, "GET", "/v1/audit/head", nil, &h); err != nil {
		return audit.SignedHead{}, err
	}
	sh := audit.SignedHead(h)
	if err := sh.Check(); err != nil {
		return sh, fmt.Errorf("the manager's head: %w", err)
	}
	return sh, nil
}

// fetchLog reads the log from the manager, page by page, up to entry
// upTo (0: all of it).
func fetchLog(ctx context.Context, c *client.Client, upTo uint64) ([]audit.Entry, error) {
	var out []audit.Entry
	from := uint64(1)
	for page := 0; page < 1<<20; page++ {
		list, err := c.Audit(ctx, from, 10000)
		if err != nil {
			return nil, err
		}
		for _, it := range list.Items {
			if upTo > 0 && it.Seq > upTo {
				return out, nil
			}
			e, err := entryOf(it)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		if list.Next == 0 || list.Next <= from {
			return out, nil
		}
		from = list.Next
	}
	return nil, errors.New("audit: the log does not end")
}

// entryOf is the entry as stored: the API answer indents Detail, which is
// hashed compact.
func entryOf(it api.AuditEntry) (audit.Entry, error) {
	var detail []byte
	if len(it.Detail) > 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, it.Detail); err != nil {
			return audit.Entry{}, fmt.Errorf("audit entry %d: detail: %w", it.Seq, err)
		}
		detail = b.Bytes()
	}
	return audit.Entry{Seq: it.Seq, Time: it.Time, Actor: audit.Actor(it.Actor), Action: it.Action, Object: it.Object,
		Detail: detail, Revision: it.Revision, PrevHash: it.PrevHash, Hash: it.Hash}, nil
}

// readHead reads a signed head from a file written by audit head, or the
// head of one written by audit export.
func readHead(path string) (audit.SignedHead, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return audit.SignedHead{}, fmt.Errorf("--head: %w", err)
	}
	var v struct {
		audit.SignedHead
		Head *audit.SignedHead `json:"head"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return audit.SignedHead{}, fmt.Errorf("--head %s: %w", path, err)
	}
	if v.Head != nil {
		return *v.Head, nil
	}
	return v.SignedHead, nil
}

func readExport(path string) (audit.Export, error) {
	f, err := os.Open(path)
	if err != nil {
		return audit.Export{}, fmt.Errorf("--log: %w", err)
	}
	defer f.Close()
	var exp audit.Export
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&exp); err != nil {
		return audit.Export{}, fmt.Errorf("--log %s: %w", path, err)
	}
	for i := range exp.Entries {
		var b bytes.Buffer
		if d := exp.Entries[i].Detail; len(d) > 0 {
			if err := json.Compact(&b, d); err != nil {
				return audit.Export{}, fmt.Errorf("--log %s: entry %d: %w", path, exp.Entries[i].Seq, err)
			}
			exp.Entries[i].Detail = b.Bytes()
		}
	}
	return exp, nil
}

// writeJSONOut writes v as indented JSON to path, or to standard output.
func writeJSONOut(cmd *cobra.Command, path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "" {
		_, err := cmd.OutOrStdout().Write(data)
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
