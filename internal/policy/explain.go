package policy

import (
	"fmt"
	"io"
	"strings"
)

// SideReport is one side of a verdict as Bulkhead prints it.
type SideReport struct {
	Action    Action   `json:"action"`
	Rule      string   `json:"rule,omitempty"` // id of the deciding rule
	Policy    string   `json:"policy,omitempty"`
	Tier      string   `json:"tier,omitempty"`
	Position  string   `json:"position,omitempty"` // file:line:col of the deciding rule
	Reason    string   `json:"reason,omitempty"`
	Passed    []string `json:"passed,omitempty"` // rules that matched without deciding
	WouldDeny string   `json:"wouldDeny,omitempty"`
}

// Report is a verdict as Bulkhead prints it (`explain -o json`, `verdicts`).
type Report struct {
	Verdict       Action     `json:"verdict"` // allow, deny or escalate
	Wall          string     `json:"wall,omitempty"`
	ConflictClass string     `json:"conflictClass,omitempty"`
	Egress        SideReport `json:"egress"`
	Ingress       SideReport `json:"ingress"`
}

// NewReport renders v.
func NewReport(v Verdict) Report {
	r := Report{Verdict: v.Action, Egress: sideReport(v.Egress), Ingress: sideReport(v.Ingress)}
	if v.Wall != nil {
		r.Wall = v.Wall.Name
	}
	if v.ConflictClass != nil {
		r.ConflictClass = v.ConflictClass.Name
	}
	return r
}

func sideReport(s Side) SideReport {
	out := SideReport{Action: s.Action, Reason: s.Reason}
	if s.Rule != nil {
		out.Rule, out.Policy, out.Tier, out.Position = s.Rule.ID, s.Rule.Policy, s.Rule.Tier.String(), s.Rule.Pos.String()
	}
	for _, p := range s.Passed {
		out.Passed = append(out.Passed, fmt.Sprintf("%s (%s)", p.ID, p.Action))
	}
	if s.WouldDeny != nil {
		out.WouldDeny = s.WouldDeny.ID
	}
	return out
}

// WriteText explains v for people.
func WriteText(w io.Writer, p Probe, v Verdict) {
	fmt.Fprintf(w, "%s -> %s %s/%s: %s\n", p.From, p.To, p.Protocol, portString(p.Protocol, p.Port), strings.ToUpper(string(v.Action)))
	if v.Wall != nil {
		fmt.Fprintf(w, "  wall %q forbids every connection between its segments %s (%s)\n", v.Wall.Name, strings.Join(v.Wall.Segments, ", "), v.Wall.Pos)
	}
	writeSide(w, "egress at the source", v.Egress)
	writeSide(w, "ingress at the destination", v.Ingress)
	if v.ConflictClass != nil {
		fmt.Fprintf(w, "  decided at run time: conflict class %q binds the source to the first of its datasets it reaches\n", v.ConflictClass.Name)
	}
}

func writeSide(w io.Writer, title string, s Side) {
	fmt.Fprintf(w, "  %s: %s\n", title, s.Action)
	for _, p := range s.Passed {
		how := "passed on to the next tier"
		if p.Action != Pass {
			how = "matched in observe mode, not enforced"
		}
		fmt.Fprintf(w, "    %s tier, %s: rule %s (%s) %s\n", p.Tier, p.Policy, p.ID, p.Pos, how)
	}
	if s.Rule != nil {
		what := "rule " + s.Rule.ID
		if s.Rule.Index < 0 {
			what = "no rule allows it, and the policy isolates the workload"
		}
		fmt.Fprintf(w, "    decided in the %s tier by %s: %s (%s)\n", s.Rule.Tier, s.Rule.Policy, what, s.Rule.Pos)
	} else {
		fmt.Fprintf(w, "    %s\n", s.Reason)
	}
	if s.WouldDeny != nil {
		fmt.Fprintf(w, "    would be denied by %s (%s) once its policy leaves observe mode\n", s.WouldDeny.ID, s.WouldDeny.Pos)
	}
}
