package runtimes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultPodmanSocket is where rootful Podman's API service listens
// (`systemctl enable --now podman.socket`, or `podman system service`).
const DefaultPodmanSocket = "/run/podman/podman.sock"

// maxInspectBytes bounds the inspect answer the plugin reads: a
// container's inspect JSON is a few KiB; a larger answer is not Podman's.
const maxInspectBytes = 4 << 20

// Podman reads containers from Podman's libpod REST API on a unix socket:
// GET /v4.0.0/libpod/containers/{id}/json (Podman 4.0 and later serve it).
type Podman struct {
	socket string
	client *http.Client
}

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

// podmanInspect is the part of libpod's InspectContainerData the plugin reads.
type podmanInspect struct {
	ID          string `json:"Id"`
	Name        string `json:"Name"`
	ImageDigest string `json:"ImageDigest"`
	Config      *struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

// Container implements Source. Podman resolves a name or an id prefix
// as well as a full id; only an answer for exactly id is accepted, so a
// container named like another's id cannot lend it its labels.
func (p *Podman) Container(ctx context.Context, id string) (Container, error) {
	op := fmt.Sprintf("look up container %q at podman %s", id, p.socket)
	if id == "" {
		return Container{}, fmt.Errorf("%s: empty id: %w", op, ErrNotFound)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/v4.0.0/libpod/containers/"+url.PathEscape(id)+"/json", nil)
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInspectBytes+1))
	switch {
	case err != nil:
		return Container{}, fmt.Errorf("%s: read the answer: %w", op, err)
	case len(body) > maxInspectBytes:
		return Container{}, fmt.Errorf("%s: the answer exceeds %d bytes", op, maxInspectBytes)
	case resp.StatusCode == http.StatusNotFound:
		return Container{}, fmt.Errorf("%s: %w (%s)", op, ErrNotFound, podmanMessage(body))
	case resp.StatusCode != http.StatusOK:
		return Container{}, fmt.Errorf("%s: HTTP %d: %s", op, resp.StatusCode, podmanMessage(body))
	}
	var in podmanInspect
	if err := json.Unmarshal(body, &in); err != nil {
		return Container{}, fmt.Errorf("%s: decode the answer: %w", op, err)
	}
	if in.ID != id {
		return Container{}, fmt.Errorf("%s: podman answered for container %q, not for exactly this id: %w", op, in.ID, ErrNotFound)
	}
	if in.Config == nil {
		return Container{}, fmt.Errorf("%s: the answer has no Config", op)
	}
	return Container{ID: in.ID, Name: in.Name, Labels: in.Config.Labels, ImageDigest: in.ImageDigest}, nil
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
