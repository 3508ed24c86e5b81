package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
	"golang.org/x/sys/unix"
)

// maxBody bounds a request body: the documents of one apply.
const maxBody = 128 << 20

// maxRegistrationBody bounds one workload registration: with the most
// labels, addresses and ports a registration may carry it stays below
// 40 KiB.
const maxRegistrationBody = 64 << 10

// listen binds the socket race-free with mode 0600: under a temporary
// name, chmod, then rename into place. A stale socket (no agent answers)
// is replaced; a live one is an error.
func listen(path string) (*net.UnixListener, error) {
	if len(path) > 100 {
		return nil, fmt.Errorf("agent: socket path %s is longer than 100 bytes, more than a unix socket allows; choose a shorter one", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("agent: create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("agent: %s exists and is not a socket; remove it or choose another --socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("agent: another agent is listening on %s", path)
		}
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".bh%d.sock", os.Getpid()))
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("agent: listen on %s: %w", path, err)
	}
	return ln, nil
}

type peerKey struct{}

// peer is the process at the other end of a connection, by SO_PEERCRED.
type peer struct {
	uid, pid int
	known    bool
}

func peerContext(ctx context.Context, c net.Conn) context.Context {
	p := peer{}
	if uc, ok := c.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					p = peer{uid: int(cred.Uid), pid: int(cred.Pid), known: true}
				}
			})
		}
	}
	return context.WithValue(ctx, peerKey{}, p)
}

func (a *Agent) server() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /v1/apply", a.handleChange(a.Apply))
	mux.HandleFunc("POST /v1/delete", a.handleChange(a.Delete))
	mux.HandleFunc("GET /v1/objects", a.handleObjects)
	mux.HandleFunc("POST /v1/explain", func(w http.ResponseWriter, r *http.Request) {
		var req api.ExplainRequest
		if !readJSON(w, r, &req) {
			return
		}
		res, err := a.Explain(req)
		respond(w, http.StatusOK, res, err)
	})
	mux.HandleFunc("GET /v1/workloads", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.Workloads())
	})
	mux.HandleFunc("POST /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		var req api.WorkloadRegistration
		if !readJSONLimit(w, r, &req, maxRegistrationBody) {
			return
		}
		p, _ := r.Context().Value(peerKey{}).(peer)
		if err := a.checkCallerNetNS(p); err != nil {
			a.log.Warn("refused a workload registration", "workload", req.Namespace+"/"+req.Name, "pid", p.pid, "err", err)
			writeError(w, err)
			return
		}
		res, err := a.RegisterWorkload(r.Context(), req)
		respond(w, http.StatusOK, res, err)
	})
	mux.HandleFunc("DELETE /v1/workloads/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := a.UnregisterWorkloadOn(r.Context(), r.PathValue("namespace"), r.PathValue("name"), r.URL.Query().Get("interface"))
		respond(w, http.StatusNoContent, nil, err)
	})
	mux.HandleFunc("GET /v1/counters", func(w http.ResponseWriter, r *http.Request) {
		res, err := a.Counters(r.Context())
		respond(w, http.StatusOK, res, err)
	})
	return &http.Server{Handler: a.authorize(mux), ConnContext: peerContext, ReadHeaderTimeout: 10 * time.Second}
}

// authorize lets root and the agent's own user call everything, anyone
// GET /v1/health.
func (a *Agent) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/health" {
			next.ServeHTTP(w, r)
			return
		}
		p, _ := r.Context().Value(peerKey{}).(peer)
		if !p.known || (p.uid != 0 && p.uid != a.uid) {
			a.log.Warn("refused a caller", "uid", p.uid, "pid", p.pid, "path", r.URL.Path)
			writeError(w, newError(fault.Forbidden, nil, "agent: uid %d may not use this agent: only root and uid %d may (GET /v1/health is open)", p.uid, a.uid))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *Agent) handleChange(fn func(context.Context, api.ApplyRequest) (api.ApplyResult, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.ApplyRequest
		if !readJSON(w, r, &req) {
			return
		}
		res, err := fn(r.Context(), req)
		respond(w, http.StatusOK, res, err)
	}
}

func (a *Agent) handleObjects(w http.ResponseWriter, r *http.Request) {
	var kinds []string
	if k := r.URL.Query().Get("kind"); k != "" {
		var err error
		if kinds, err = ResolveKind(k); err != nil {
			writeError(w, newError(fault.BadRequest, nil, "%v", err))
			return
		}
	}
	writeJSON(w, http.StatusOK, a.Objects(kinds...))
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	return readJSONLimit(w, r, v, maxBody)
}

// readJSONLimit decodes a body of at most limit bytes that holds exactly
// one JSON value, so that what the agent acts on is all the caller sent,
// as the caller wrote it.
func readJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		kind := fault.BadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			kind, err = fault.TooLarge, fmt.Errorf("the body is larger than %d bytes, the most %s %s takes", limit, r.Method, r.URL.Path)
		}
		writeError(w, newError(kind, nil, "agent: read request: %w", err))
		return false
	}
	// strict.JSON, as the manager's API: exactly one value, no unknown,
	// duplicate or case-folded keys, valid UTF-8.
	if err := strict.JSON(data, v); err != nil {
		writeError(w, newError(fault.BadRequest, nil, "agent: %s %s: decode request: %v", r.Method, r.URL.Path, err))
		return false
	}
	return true
}

func respond(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, v)
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e = newError(fault.Unavailable, nil, "agent: %w", err)
	default:
		e = newError(fault.Internal, nil, "%w", err)
	}
	writeJSON(w, fault.HTTPStatus(e), api.APIError{Error: e.Msg, Details: e.Details})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ExplainResult answers POST /v1/explain: the report of `bulkhead explain
// -o json`, and the same explanation in words.
type ExplainResult struct {
	policy.Report
	Text string `json:"text"`
}

// Explain judges one hypothetical connection against the set in force
// with the reference evaluator.
func (a *Agent) Explain(req api.ExplainRequest) (ExplainResult, error) {
	bad := func(format string, args ...any) (ExplainResult, error) {
		return ExplainResult{}, newError(fault.BadRequest, nil, "agent: explain: "+format, args...)
	}
	e, err := a.snap.Load().policyEngine()
	if err != nil {
		return ExplainResult{}, newError(fault.Internal, details(err), "agent: explain: the set in force does not validate")
	}
	name := req.Protocol
	if name == "" {
		name = "tcp"
	}
	proto, ok := policy.ParseProtocol(name)
	if !ok {
		return bad("unknown protocol %q; valid: tcp, udp, sctp, icmp, icmpv6", req.Protocol)
	}
	port := req.Port
	if proto.HasPorts() && (port < 1 || port > 65535) {
		return bad("port %d: want 1-65535", port)
	}
	if !proto.HasPorts() {
		if port < 0 || port > 255 || req.Code < 0 || req.Code > 255 {
			return bad("ICMP type %d code %d: want 0-255 each", port, req.Code)
		}
		port = port<<8 | req.Code
	}
	if req.From == "" || req.To == "" {
		return bad("both from and to are required: namespace/name or an IP address")
	}
	from, err := endpoint(e, req.From)
	if err != nil {
		return bad("from: %v", err)
	}
	to, err := endpoint(e, req.To)
	if err != nil {
		return bad("to: %v", err)
	}
	probe := policy.Probe{From: from, To: to, Protocol: proto, Port: port}
	v := e.Evaluate(probe)
	var text strings.Builder
	policy.WriteText(&text, probe, v)
	return ExplainResult{Report: policy.NewReport(v), Text: text.String()}, nil
}

func endpoint(e *policy.Engine, ref string) (policy.Endpoint, error) {
	ep, err := e.Endpoint(ref)
	if err != nil && strings.Count(ref, "/") == 1 {
		return ep, fmt.Errorf("no workload %s is registered with this agent or applied as a Workload object", ref)
	}
	return ep, err
}
