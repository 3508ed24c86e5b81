package runtimes

import (
	"context"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeContainerd serves containerd's containers and namespaces services
// on a real unix socket, answering as containerd does: a request without
// a namespace fails, an unknown container is NotFound.
type fakeContainerd struct {
	containersapi.UnimplementedContainersServer
	containers map[string]map[string]*containersapi.Container // namespace → id → container
}

func (f *fakeContainerd) Get(ctx context.Context, r *containersapi.GetContainerRequest) (*containersapi.GetContainerResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ns := md.Get(namespaceHeader)
	if len(ns) != 1 {
		return nil, status.Error(codes.FailedPrecondition, "namespace is required")
	}
	c, ok := f.containers[ns[0]][r.ID]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q in namespace %q: not found", r.ID, ns[0])
	}
	return &containersapi.GetContainerResponse{Container: c}, nil
}

// fakeNamespaces is its namespaces service.
type fakeNamespaces struct {
	namespacesapi.UnimplementedNamespacesServer
	f *fakeContainerd
}

func (n fakeNamespaces) List(context.Context, *namespacesapi.ListNamespacesRequest) (*namespacesapi.ListNamespacesResponse, error) {
	var out []*namespacesapi.Namespace
	for ns := range n.f.containers {
		out = append(out, &namespacesapi.Namespace{Name: ns})
	}
	return &namespacesapi.ListNamespacesResponse{Namespaces: out}, nil
}

func serveContainerd(t *testing.T, f *fakeContainerd) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	containersapi.RegisterContainersServer(srv, f)
	namespacesapi.RegisterNamespacesServer(srv, fakeNamespaces{f: f})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

func TestContainerd(t *testing.T) {
	web := &containersapi.Container{ID: "web-1", Image: "localhost/web:1", Labels: map[string]string{"app": "web"}}
	f := &fakeContainerd{containers: map[string]map[string]*containersapi.Container{
		"default": {"web-1": web},
		"a":       {"b-c": {ID: "b-c", Labels: map[string]string{"app": "one"}}},
		"a-b":     {"c": {ID: "c", Labels: map[string]string{"app": "two"}}, "d": {ID: "d"}},
		"k8s.io":  {"4f6a": {ID: "4f6a", Labels: map[string]string{"app": "pod", "io.cri-containerd.kind": "sandbox"}}},
	}}
	sock := serveContainerd(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, c := range []struct {
		namespace, id string
		wantNS, want  string // want: the app label
	}{
		{"", "default-web-1", "default", "web"}, // ctr run --cni, namespace from the id
		{"default", "default-web-1", "default", "web"},
		{"", "a-b-d", "a-b", ""},   // only one reading exists
		{"a", "a-b-c", "a", "one"}, // the namespace given decides
		{"a-b", "a-b-c", "a-b", "two"},
		{"k8s.io", "4f6a", "k8s.io", "pod"}, // the CRI's sandbox id
	} {
		got, err := NewContainerd("unix://"+sock, c.namespace).Container(ctx, c.id)
		if err != nil {
			t.Errorf("namespace %q, id %q: %v", c.namespace, c.id, err)
			continue
		}
		if got.Namespace != c.wantNS || got.Labels["app"] != c.want || got.Labels == nil {
			t.Errorf("namespace %q, id %q = %+v; want namespace %s, app=%q", c.namespace, c.id, got, c.wantNS, c.want)
		}
	}
	got, _ := NewContainerd(sock, "").Container(ctx, "default-web-1")
	if got.ID != "web-1" || got.Name != "web-1" || got.Image != "localhost/web:1" || !maps.Equal(got.Labels, web.Labels) {
		t.Errorf("web-1 = %+v", got)
	}

	for _, c := range []struct {
		namespace, id, want string
		notFound            bool
	}{
		{"", "a-b-c", "ambiguous: containers a/b-c and a-b/c", false},
		{"", "default-web-2", "no such container (tried default/web-2)", true},
		{"", "web-1", "no containerd namespace", true},
		{"default", "web-2", "no such container", true},
		{"k8s.io", "default-web-1", "no such container", true},
	} {
		_, err := NewContainerd(sock, c.namespace).Container(ctx, c.id)
		if err == nil || !strings.Contains(err.Error(), c.want) || IsNotFound(err) != c.notFound {
			t.Errorf("namespace %q, id %q: %v; want %q (not found: %v)", c.namespace, c.id, err, c.want, c.notFound)
		}
	}

	_, err := NewContainerd(filepath.Join(t.TempDir(), "none.sock"), "default").Container(ctx, "default-web-1")
	if !IsUnavailable(err) || IsNotFound(err) {
		t.Errorf("no containerd: %v; want unavailable", err)
	}
}

func TestIdentifierProblem(t *testing.T) {
	for s, ok := range map[string]bool{"default": true, "k8s.io": true, "a-b_c.d": true, "": false, "-a": false,
		"a--b": false, "a/b": false, strings.Repeat("a", 76): true, strings.Repeat("a", 77): false} {
		if got := IdentifierProblem(s) == ""; got != ok {
			t.Errorf("IdentifierProblem(%q) = %q", s, IdentifierProblem(s))
		}
	}
}
