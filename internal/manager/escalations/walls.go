package escalations

import (
	"context"
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Classes finds the conflict classes of the policy revision in force.
type Classes interface {
	// Access returns the class named name and the dataset of it whose
	// segment holds dst ("" when none), and whether src is one of the
	// workloads the class binds (its subjects). A class the revision does
	// not hold is an error.
	Access(ctx context.Context, name string, src, dst api.EscalationEndpoint) (ClassAccess, error)
}

// ClassAccess is what Classes.Access found.
type ClassAccess struct {
	Class   *policy.ConflictClass
	Dataset string
	Subject bool
}

// wallAccess is an escalation into a dataset of a class that binds its
// source, not yet bound: it binds when the outcome is allow.
type wallAccess struct {
	in      bindings.Instance
	class   *policy.ConflictClass
	dataset string
}

// wall decides an escalation with a conflict class by the source's
// binding (Config.Bindings). It returns a final answer (done), or, when
// the decision rules are to decide the rest, the access to bind once
// they allow (nil: bound to this dataset already, or not a subject of
// the class). A binding to another dataset denies whatever the rules
// say; a class without rules is decided by the binding alone. Anything
// that cannot be read denies.
func (s *Service) wall(ctx context.Context, host string, req api.EscalationRequest) (acc *wallAccess, a answer, done bool) {
	deny := func(format string, args ...any) (*wallAccess, answer, bool) {
		return nil, answer{outcome: decide.Deny, actor: auditlog.System, reason: fmt.Sprintf(format, args...) + ": denied"}, true
	}
	name := req.ConflictClass
	ca, err := s.cfg.Classes.Access(ctx, name, req.Source, req.Destination)
	if err != nil {
		return deny("conflict class %s: %v", name, err)
	}
	if !ca.Subject {
		if len(req.Rules) == 0 {
			return deny("conflict class %s does not bind %s, and no rule escalated it", name, describe(req.Source))
		}
		return nil, answer{}, false
	}
	if ca.Dataset == "" {
		return deny("conflict class %s: %s is in none of its datasets", name, describe(req.Destination))
	}
	if req.Source.Name == "" {
		return deny("conflict class %s: the source %s is no workload the manager knows, and only a workload is bound", name, req.Source.Address)
	}
	srcHost := req.Source.Host
	if srcHost == "" {
		srcHost = host
	}
	in := bindings.Instance{Host: srcHost, Namespace: req.Source.Namespace, Name: req.Source.Name}
	v, err := s.cfg.Bindings.Check(ctx, in, ca.Class, ca.Dataset)
	if err != nil {
		return deny("conflict class %s: read the binding of %s: %v", name, in.Workload(), err)
	}
	switch v.Outcome {
	case bindings.Denied:
		return nil, answer{outcome: decide.Deny, actor: auditlog.System, reason: boundReason(v.Binding, ca.Dataset)}, true
	case bindings.Allowed:
		if len(req.Rules) == 0 {
			return nil, answer{outcome: decide.Allow, actor: auditlog.System, reason: boundReason(v.Binding, ca.Dataset)}, true
		}
		return nil, answer{}, false
	}
	acc = &wallAccess{in: in, class: ca.Class, dataset: ca.Dataset}
	if len(req.Rules) == 0 {
		return nil, s.bind(ctx, acc, answer{outcome: decide.Allow, actor: auditlog.System, reason: "first access"}), true
	}
	return acc, answer{}, false
}

// bind binds acc when a allows, and says so; a lost race or a store
// error denies.
func (s *Service) bind(ctx context.Context, acc *wallAccess, a answer) answer {
	if acc == nil || a.outcome != decide.Allow {
		return a
	}
	b, err := s.cfg.Bindings.Bind(ctx, acc.in, acc.class, acc.dataset)
	if err != nil {
		a.outcome, a.reason = decide.Deny, fmt.Sprintf("%s; conflict class %s: bind %s to %s: %v: denied", a.reason, acc.class.Name, acc.in.Workload(), acc.dataset, err)
		return a
	}
	if b.Dataset != acc.dataset {
		a.outcome = decide.Deny
	}
	a.reason = fmt.Sprintf("%s; %s", a.reason, boundReason(&b, acc.dataset))
	return a
}

// boundReason names binding b, as it decides a connection to dataset.
func boundReason(b *bindings.Binding, dataset string) string {
	verdict := "allowed"
	if b.Dataset != dataset {
		verdict = fmt.Sprintf("%s denied", dataset)
	}
	return fmt.Sprintf("%s bound to dataset %s of conflict class %s since %s (%s scope, binding %s): %s",
		b.Instance.Workload(), b.Dataset, b.Class, b.Since.Format(time.RFC3339), b.Scope, b.Key(), verdict)
}

func describe(e api.EscalationEndpoint) string {
	if e.Name != "" {
		return e.Namespace + "/" + e.Name
	}
	return e.Address
}
