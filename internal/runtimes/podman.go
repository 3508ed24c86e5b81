package runtimes

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// DefaultPodmanSocket is where rootful Podman's API service listens
// (`systemctl enable --now podman.socket`, or `podman system service`).
const DefaultPodmanSocket = "/run/podman/podman.sock"

// maxEventBytes bounds the answer the plugin reads: one create event
// is well under 64 KiB (64 labels of 63 characters); a larger answer is
// not Podman's.
const maxEventBytes = 4 << 20

// Podman reads containers from Podman's libpod REST API on a unix socket
// (Podman 4.0 and later): the container's create event,
// GET /v4.0.0/libpod/events?stream=false&filters={"container":[ID],"event":["create"]},
// whose attributes are the container's labels (its `--label`s and its
// image's) with its name and image added.
//
// Not the container's inspect (GET /v4.0.0/libpod/containers/ID/json)
// nor the container list: Podman holds the container's lock while it
// sets up its network, which is while it runs the CNI plugin, and both
// wait for that lock. Measured with Podman 4.3: during ADD neither
// answers within 10 s (nor does the list answer anyone else), while the
// events endpoint answers in about 20 ms.
type Podman struct {
	socket string
	client *http.Client
}

// podmanAttributes are the keys Podman adds to a create event's
// attributes beside the labels; a label of the same key is overwritten
// by Podman, so these keys cannot carry labels.
var podmanAttributes = []string{"image", "name", "podId", "containerExitCode"}

// ReservedLabels are the label keys Podman's events cannot carry.
func ReservedLabels() []string { return slices.Clone(podmanAttributes) }

// NewPodman returns a Source for the Podman API service at socket (a
// path, or unix:///path).
func NewPodman(socket string) *Podman {
	path := strings.TrimPrefix(socket, "unix://")
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return &Podman{socket: path, client: &http.Client{Transport: tr}}
}

func (p *Podman) String() string { return "podman at " + p.socket }

// podmanEvent is the part of libpod's event the plugin reads.
type podmanEvent struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	From   string `json:"from"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
}

// Container implements Source. Only the create event of exactly id is
// taken (Podman's filter also matches names), so no other container can
// lend it its labels.
func (p *Podman) Container(ctx context.Context, id string) (Container, error) {
	op := fmt.Sprintf("look up container %q at podman %s", id, p.socket)
	if id == "" {
		return Container{}, fmt.Errorf("%s: empty id: %w", op, ErrNotFound)
	}
	filters, err := json.Marshal(map[string][]string{"container": {id}, "event": {"create"}, "type": {"container"}})
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", op, err)
	}
	q := url.Values{"stream": {"false"}, "filters": {string(filters)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/v4.0.0/libpod/events?"+q.Encode(), nil)
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxEventBytes+1))
	switch {
	case err != nil:
		return Container{}, fmt.Errorf("%s: read the answer: %w", op, err)
	case len(body) > maxEventBytes:
		return Container{}, fmt.Errorf("%s: the answer exceeds %d bytes", op, maxEventBytes)
	case resp.StatusCode != http.StatusOK:
		return Container{}, fmt.Errorf("%s: HTTP %d: %s", op, resp.StatusCode, podmanMessage(body))
	}
	// The answer is a sequence of JSON objects, one per event.
	d := json.NewDecoder(bytes.NewReader(body))
	var found *podmanEvent
	for n := 0; ; n++ {
		var ev podmanEvent
		if err := d.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			return Container{}, fmt.Errorf("%s: decode event %d: %w", op, n, err)
		}
		if ev.Type == "container" && ev.Action == "create" && ev.Actor.ID == id {
			found = &ev
		}
	}
	if found == nil {
		return Container{}, fmt.Errorf("%s: %w (podman has no create event for exactly this id; "+
			"its events log may have been rotated since the container was created)", op, ErrNotFound)
	}
	attrs := found.Actor.Attributes
	labels := make(map[string]string, len(attrs))
	for k, v := range attrs {
		if !slices.Contains(podmanAttributes, k) {
			labels[k] = v
		}
	}
	return Container{ID: id, Name: attrs["name"], Labels: labels, Image: cmp.Or(attrs["image"], found.From)}, nil
}

// podmanMessage is the message of libpod's error body, or the body itself
// (shortened).
func podmanMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return "no message"
	}
	return s
}

// IsNotFound reports whether err says the runtime has no such container.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
