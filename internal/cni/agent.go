package cni

import (
	"context"
	"errors"
	"syscall"

	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
)

// A registration belongs to an attachment when it names the attachment's
// host interface: the name derives from container id and interface name
// (attach.HostIfName), so DEL and GC find their registrations without
// state, and never remove a newer registration of the same namespace/name
// made through another container (a recreated pod).

// unregisterOwned removes every registration whose interface is one of
// hostIfs; each removal is conditional on the interface, so a name that
// another attachment registered since the list stays registered.
func unregisterOwned(ctx context.Context, c *client.Client, hostIfs map[string]bool) error {
	list, err := c.Workloads(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range list {
		if hostIfs[r.Interface] {
			errs = append(errs, c.UnregisterWorkloadOn(ctx, r.Namespace, r.Name, r.Interface))
		}
	}
	return errors.Join(errs...)
}

// flushPending tells the agent to forget the workloads of attachments
// that DEL or GC removed while it was unreachable, then frees their
// addresses. It is best-effort: a failure leaves them pending.
func (p *plugin) flushPending(store *Store, c *client.Client) {
	st, err := store.Read()
	if err != nil || len(st.Pending) == 0 {
		return
	}
	hostIfs := map[string]bool{}
	for _, a := range st.Pending {
		hostIfs[a.HostIf] = true
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
	defer cancel()
	if err := unregisterOwned(ctx, c, hostIfs); err != nil {
		p.log.Warn("pending unregistrations stay pending: agent unreachable", "socket", c.Socket(), "pending", len(hostIfs), "err", err)
		return
	}
	if err := store.DropPending(hostIfs); err != nil {
		p.log.Warn("drop pending unregistrations", "err", err)
		return
	}
	p.log.Info("agent forgot removed workloads; their addresses are free", "count", len(hostIfs))
}

// agentError turns a failed call to the agent into a CNI error: the
// agent's refusal (or a socket the plugin may not use) is code 102 with
// the reasons; an agent that does not answer, or is overloaded, is code 11.
func agentError(socket, op string, err error) error {
	var ae *client.Error
	switch {
	case errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500:
		return cniError(CodeAgentRefused, "%s: the agent at %s refused: %v", op, socket, err)
	case errors.As(err, &ae) && ae.Status != 502 && ae.Status != 503 && ae.Status != 504:
		return cniError(CodeAgentRefused, "%s: the agent at %s failed: %v", op, socket, err)
	case errors.Is(err, syscall.EACCES):
		return cniError(CodeAgentRefused, "%s: %v", op, err)
	case errors.Is(err, context.Canceled):
		return cniError(CodeTryAgainLater, "%s: interrupted: %v", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return cniError(CodeTryAgainLater, "%s: the agent at %s did not answer in time: %v", op, socket, err)
	}
	return cniError(CodeTryAgainLater, "%s: the agent is unreachable: %v", op, err)
}

// neverReached reports whether err proves the request never reached the
// agent (nothing listens on the socket).
func neverReached(err error) bool { return errors.Is(err, client.ErrNoAgent) }
