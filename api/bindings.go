package api

import "time"

// Binding is a workload's binding to one dataset of a conflict class
// (docs/policy.md "Conflict classes"): its connections to the class's
// other datasets are denied until the scope ends. Host and ContainerID
// name the instance whose first access made it.
type Binding struct {
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	Class       string    `json:"class"`
	Dataset     string    `json:"dataset"`
	Scope       string    `json:"scope"` // lifecycle, permanent, window, session
	Host        string    `json:"host"`
	ContainerID string    `json:"containerID,omitempty"`
	Since       time.Time `json:"since"`
	Expires     time.Time `json:"expires,omitzero"` // absent: it does not expire
	Revision    int64     `json:"revision"`         // the store revision it was written at
}

// BindingList answers GET /v1/bindings: the bindings in force.
type BindingList struct {
	Items []Binding `json:"items"`
}
