package runtimes

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
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

// podmanCreateEvent is a create event as Podman 4.3 answers it.
func podmanCreateEvent(id, name string, labels map[string]string) string {
	attrs := map[string]string{"containerExitCode": "0", "image": "localhost/web:1", "name": name, "podId": ""}
	for k, v := range labels {
		attrs[k] = v
	}
	b, _ := json.Marshal(map[string]any{"status": "create", "id": id, "from": "localhost/web:1", "Type": "container", "Action": "create",
		"Actor": map[string]any{"ID": id, "Attributes": attrs}, "scope": "local", "time": 1796180683})
	return string(b) + "\n"
}

// TestPodmanEvents reads containers as Podman 4.3's events endpoint
// answers, including its container filter's name matches.
func TestPodmanEvents(t *testing.T) {
	sock := servePodman(t, func(w http.ResponseWriter, r *http.Request) {
		var f struct {
			Container, Event, Type []string
		}
		if r.URL.Path != "/v4.0.0/libpod/events" || r.URL.Query().Get("stream") != "false" ||
			json.Unmarshal([]byte(r.URL.Query().Get("filters")), &f) != nil || len(f.Container) != 1 ||
			!slices.Equal(f.Event, []string{"create"}) || !slices.Equal(f.Type, []string{"container"}) {
			w.WriteHeader(400)
			w.Write([]byte(`{"cause": "bad", "message": "bad request", "response": 400}`))
			return
		}
		web := podmanCreateEvent(webID, "frosty_pare", map[string]string{"app": "web", "bulkhead.dev/namespace": "shop"})
		switch id := f.Container[0]; id {
		case webID:
			w.Write([]byte(web))
		case "frosty_pare": // Podman matches names too
			w.Write([]byte(web))
		case "huge":
			w.Write([]byte(podmanCreateEvent("huge", strings.Repeat("x", maxEventBytes), nil)))
		case "broken":
			w.Write([]byte(web + `{"Type": `))
		case "failing":
			w.WriteHeader(500)
			w.Write([]byte(`{"cause": "x", "message": "database is locked", "response": 500}`))
		case "slow":
			<-r.Context().Done()
		}
	})
	p := NewPodman("unix://" + sock)
	ctx := context.Background()
	c, err := p.Container(ctx, webID)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != webID || c.Name != "frosty_pare" || c.Image != "localhost/web:1" ||
		!maps.Equal(c.Labels, map[string]string{"app": "web", "bulkhead.dev/namespace": "shop"}) {
		t.Errorf("events = %+v; want the labels without Podman's own attributes", c)
	}
	for _, c := range []struct {
		id, want string
		notFound bool
	}{
		{"frosty_pare", "no create event for exactly this id", true},
		{"gone", "no create event", true},
		{"", "empty id", true},
		{"huge", "exceeds", false},
		{"broken", "decode event 1", false},
		{"failing", "HTTP 500: database is locked", false},
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
