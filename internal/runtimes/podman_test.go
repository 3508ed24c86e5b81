package runtimes

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// servePodman serves a libpod-shaped inspect endpoint on a real unix
// socket: the answers Podman 4.3 gives, as the handler says.
func servePodman(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

const webID = "3f2a9c7d5e1b4a6f8c0d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a2b"

func TestPodmanInspect(t *testing.T) {
	sock := servePodman(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v4.0.0/libpod/containers/" + webID + "/json":
			w.Write([]byte(`{"Id": "` + webID + `", "Name": "frosty_pare", "ImageDigest": "sha256:abc",
				"Config": {"Labels": {"app": "web", "bulkhead.dev/namespace": "shop"}, "Env": ["A=B"]}, "State": {"Status": "created"}}`))
		case "/v4.0.0/libpod/containers/3f2a/json", "/v4.0.0/libpod/containers/frosty_pare/json":
			// Podman resolves an id prefix or a name to the container.
			w.Write([]byte(`{"Id": "` + webID + `", "Name": "frosty_pare", "Config": {"Labels": {"app": "web"}}}`))
		case "/v4.0.0/libpod/containers/huge/json":
			w.Write([]byte(`{"Id": "huge", "Name": "` + strings.Repeat("x", maxInspectBytes) + `"}`))
		case "/v4.0.0/libpod/containers/broken/json":
			w.Write([]byte(`{"Id": "broken", `))
		case "/v4.0.0/libpod/containers/noconfig/json":
			w.Write([]byte(`{"Id": "noconfig"}`))
		case "/v4.0.0/libpod/containers/failing/json":
			w.WriteHeader(500)
			w.Write([]byte(`{"cause": "x", "message": "database is locked", "response": 500}`))
		case "/v4.0.0/libpod/containers/slow/json":
			<-r.Context().Done()
		default:
			w.WriteHeader(404)
			w.Write([]byte(`{"cause": "no such container", "message": "no container with name or ID \"x\" found: no such container", "response": 404}`))
		}
	})
	p := NewPodman("unix://" + sock)
	ctx := context.Background()
	c, err := p.Container(ctx, webID)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != webID || c.Name != "frosty_pare" || c.ImageDigest != "sha256:abc" || c.Labels["app"] != "web" || c.Labels["bulkhead.dev/namespace"] != "shop" {
		t.Errorf("inspect = %+v", c)
	}
	for _, c := range []struct {
		id, want string
		notFound bool
	}{
		{"3f2a", "not for exactly this id", true},
		{"frosty_pare", "not for exactly this id", true},
		{"gone", "no container with name or ID", true},
		{"", "empty id", true},
		{"huge", "exceeds", false},
		{"broken", "decode", false},
		{"noconfig", "no Config", false},
		{"failing", "HTTP 500: database is locked", false},
		{"../../v4.0.0/libpod/containers/" + webID, "no container", true},
	} {
		_, err := p.Container(ctx, c.id)
		if err == nil || !strings.Contains(err.Error(), c.want) || IsNotFound(err) != c.notFound {
			t.Errorf("Container(%q) = %v; want an error with %q, not found %v", c.id, err, c.want, c.notFound)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := p.Container(short, "slow"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a slow podman = %v, want the context's deadline", err)
	}
	if _, err := NewPodman(filepath.Join(t.TempDir(), "none.sock")).Container(ctx, webID); err == nil || IsNotFound(err) {
		t.Errorf("no podman at the socket = %v, want an error other than not found", err)
	}
}

func TestFake(t *testing.T) {
	f := NewFake(Container{ID: "a", Labels: map[string]string{"k": "v"}})
	c, err := f.Container(context.Background(), "a")
	if err != nil || c.Labels["k"] != "v" {
		t.Fatalf("fake = %+v, %v", c, err)
	}
	c.Labels["k"] = "changed"
	if c, _ := f.Container(context.Background(), "a"); c.Labels["k"] != "v" || f.Asked("a") != 2 {
		t.Error("the fake handed out its own map")
	}
	if _, err := f.Container(context.Background(), "b"); !IsNotFound(err) {
		t.Errorf("unknown id = %v, want not found", err)
	}
}
