// Package runtimes reads what a container runtime knows about a
// container — its labels, name and image — from the runtime's own API,
// so that a workload's identity comes from where its operator set it
// (`podman run --label`) rather than from one CNI network per label set.
//
// Source is the interface the CNI plugin uses; Podman reads Podman's
// libpod REST API on its unix socket, Containerd containerd's gRPC API on
// its, and Fake stands beside them in tests.
// The conventions for the label keys that carry a workload's namespace
// and named ports are in docs/cni.md.
package runtimes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
)

// Container is what a runtime says about one container.
type Container struct {
	// ID is the runtime's full container id.
	ID string
	// Namespace is the runtime's namespace the container lives in
	// (containerd's; "" for Podman).
	Namespace string
	// Name is the runtime's name for it, as the runtime shows it (with
	// containerd, which has no names, its id within its namespace).
	Name string
	// Labels are the container's labels, as the runtime holds them
	// (with Podman, the image's labels and those of `--label`, except
	// ReservedLabels).
	Labels map[string]string
	// Image is the image it runs, as the runtime names it (with Podman,
	// the name it was created from), when known.
	Image string
}

// Source looks containers up by id.
type Source interface {
	// Container returns the container whose id is exactly id. It fails
	// with an error wrapping ErrNotFound when the runtime has no such
	// container, and with another error when the runtime cannot be asked.
	Container(ctx context.Context, id string) (Container, error)
	// String names the source in errors, such as "podman at
	// /run/podman/podman.sock".
	String() string
}

// ErrNotFound is wrapped by a Source that has no container of the id.
var ErrNotFound = errors.New("no such container")

// ErrUnavailable is wrapped by a Source whose runtime API cannot be
// reached (no socket, nobody listening, the runtime restarting).
var ErrUnavailable = errors.New("runtime API unavailable")

// Fake is a Source that answers from a map, for tests. Its zero value
// holds no container.
type Fake struct {
	mu         sync.Mutex
	containers map[string]Container
	// Err, when set, is what every lookup fails with.
	Err error
	// asked counts the lookups, per id.
	asked map[string]int
}

// NewFake returns a Fake holding cs, keyed by their ID.
func NewFake(cs ...Container) *Fake {
	f := &Fake{containers: map[string]Container{}, asked: map[string]int{}}
	for _, c := range cs {
		f.containers[c.ID] = c
	}
	return f
}

// Container implements Source.
func (f *Fake) Container(ctx context.Context, id string) (Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.asked == nil {
		f.asked = map[string]int{}
	}
	f.asked[id]++
	if f.Err != nil {
		return Container{}, f.Err
	}
	c, ok := f.containers[id]
	if !ok {
		return Container{}, fmt.Errorf("look up container %q: %w", id, ErrNotFound)
	}
	c.Labels = maps.Clone(c.Labels)
	return c, nil
}

// Add holds c from now on (a container the runtime learns of later).
func (f *Fake) Add(c Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.containers == nil {
		f.containers = map[string]Container{}
	}
	f.containers[c.ID] = c
}

// SetErr makes every lookup fail with err (nil: answer again).
func (f *Fake) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Err = err
}

// Asked says how often id was looked up.
func (f *Fake) Asked(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[id]
}

func (f *Fake) String() string { return "fake runtime" }
