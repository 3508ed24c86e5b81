package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// The spec's well-known error codes that the plugin returns (SPEC.md,
// "Error"), and its own, from 100 on. Every error reaches the runtime as
// the spec's error JSON on stdout with a non-zero exit.
const (
	// CodeUnsupportedField: an unknown key in the network configuration;
	// the message names the key and its value.
	CodeUnsupportedField = types.ErrUnsupportedField // 2
	// CodeInvalidEnv: a missing or invalid CNI_* variable (CNI_ARGS,
	// CNI_NETNS); the message names the variable.
	CodeInvalidEnv = types.ErrInvalidEnvironmentVariables // 4
	// CodeInvalidConfig: a known key with an invalid value.
	CodeInvalidConfig = types.ErrInvalidNetworkConfig // 7
	// CodeTryAgainLater: the agent did not answer, or the IPAM lock was
	// held for too long; nothing was left behind, so retrying is safe.
	CodeTryAgainLater = types.ErrTryAgainLater // 11
	// CodeNotAvailable: STATUS found the agent down or no address left.
	CodeNotAvailable = types.ErrPluginNotAvailable // 50

	// CodeAddressUnavailable: a requested address is outside the subnet,
	// is its network or broadcast address, or belongs to another
	// attachment.
	CodeAddressUnavailable uint = 100
	// CodePoolExhausted: no free address is left in a subnet.
	CodePoolExhausted uint = 101
	// CodeAgentRefused: the agent answered but refused the workload
	// (invalid labels, ports or names); the details carry its reasons.
	CodeAgentRefused uint = 102
	// CodeInterface: creating the veth pair, its addresses or routes failed.
	CodeInterface uint = 103
	// CodeAlreadyAttached: ADD for a (container, interface) that is
	// attached already; DEL it first.
	CodeAlreadyAttached uint = 104
	// CodeCheckFailed: CHECK found the attachment or its registration
	// missing or different.
	CodeCheckFailed uint = 105
	// CodeState: the IPAM state file cannot be read or written.
	CodeState uint = 106
	// CodeWrongNamespace: the agent enforces in another network namespace
	// than the one the plugin attaches in (where the runtime runs it), so
	// the workload would not be enforced.
	CodeWrongNamespace uint = 107
	// CodeRuntime: labelsFrom is configured and the runtime's API could
	// not tell the container's labels, or they break the conventions or
	// the policy's rules; the workload is not attached without them.
	CodeRuntime uint = 108
)

// cniError returns a CNI error with a code, a message (what went wrong)
// and details (where, and what would be valid).
func cniError(code uint, details string, args ...any) *types.Error {
	return types.NewError(code, codeMessage(code), fmt.Sprintf(details, args...))
}

// wrapError turns err into a CNI error with code, unless it is one
// already.
func wrapError(code uint, err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(code, codeMessage(code), err.Error())
}

func codeMessage(code uint) string {
	switch code {
	case CodeUnsupportedField:
		return "unsupported field in network configuration"
	case CodeInvalidEnv:
		return "invalid environment variables"
	case CodeInvalidConfig:
		return "invalid network configuration"
	case CodeTryAgainLater:
		return "try again later"
	case CodeNotAvailable:
		return "plugin not available"
	case CodeAddressUnavailable:
		return "address not available"
	case CodePoolExhausted:
		return "no address left"
	case CodeAgentRefused:
		return "agent refused the workload"
	case CodeInterface:
		return "interface setup failed"
	case CodeAlreadyAttached:
		return "already attached"
	case CodeCheckFailed:
		return "check failed"
	case CodeState:
		return "IPAM state unusable"
	case CodeWrongNamespace:
		return "the agent does not enforce in this network namespace"
	case CodeRuntime:
		return "the container's labels are not known"
	}
	return "bulkhead-cni error"
}
