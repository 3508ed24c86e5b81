package runtimes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DefaultContainerdSocket is where containerd serves its API.
const DefaultContainerdSocket = "/run/containerd/containerd.sock"

// namespaceHeader is the gRPC metadata key by which containerd learns
// the namespace of a request (containerd's namespaces.GRPCHeader).
const namespaceHeader = "containerd-namespace"

// identifier is containerd's rule for namespaces and container ids
// (pkg/identifiers): alphanumerics separated by single '.', '_' or '-',
// at most 76 characters.
var identifier = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// IdentifierProblem says why s is not a valid containerd namespace or
// container id, or "" when it is one.
func IdentifierProblem(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 76:
		return fmt.Sprintf("%d characters; containerd allows at most 76", len(s))
	case !identifier.MatchString(s):
		return "want letters and digits separated by single '.', '_' or '-', as containerd's identifiers are"
	}
	return ""
}

// Containerd reads containers from containerd's API (the containers
// service, over gRPC on its unix socket): a container's labels, its
// image and its id. It speaks containerd's API 1.x, which containerd 1.6,
// 1.7 and 2.x serve.
//
// CNI_CONTAINERID is not containerd's container id in every case:
// `ctr run --cni` passes NAMESPACE-ID (its fullID), containerd's CRI the
// sandbox id (in the namespace k8s.io). Container resolves both; see
// its doc.
type Containerd struct {
	socket    string
	namespace string
}

// NewContainerd returns a Source for containerd's API at socket (a path,
// or unix:///path). With namespace "", the namespace is read from the
// id (ctr's NAMESPACE-ID) among the namespaces containerd has.
func NewContainerd(socket, namespace string) *Containerd {
	return &Containerd{socket: strings.TrimPrefix(socket, "unix://"), namespace: namespace}
}

func (c *Containerd) String() string {
	if c.namespace == "" {
		return "containerd at " + c.socket
	}
	return fmt.Sprintf("containerd at %s (namespace %s)", c.socket, c.namespace)
}

// candidate is one way to read a CNI container id: a container id in a
// containerd namespace.
type candidate struct{ namespace, id string }

// Container implements Source. The id is read as ctr's NAMESPACE-ID
// and, with a namespace configured, also as a container id of that
// namespace (the CRI's sandbox id). Every reading whose container
// exists counts: exactly one must, or the lookup fails — with
// ErrNotFound when none does, and as ambiguous (never guessing) when
// several do, such as namespaces "a" and "a-b" holding "b-c" and "c".
func (c *Containerd) Container(ctx context.Context, id string) (Container, error) {
	op := fmt.Sprintf("look up container %q at %s", id, c)
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", op, err)
	}
	defer conn.Close()
	cands, err := c.candidates(ctx, conn, id)
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", op, err)
	}
	var found []Container
	var tried []string
	client := containersapi.NewContainersClient(conn)
	for _, cd := range cands {
		tried = append(tried, cd.namespace+"/"+cd.id)
		resp, err := client.Get(metadata.AppendToOutgoingContext(ctx, namespaceHeader, cd.namespace),
			&containersapi.GetContainerRequest{ID: cd.id})
		if status.Code(err) == codes.NotFound {
			continue
		}
		if err != nil {
			return Container{}, fmt.Errorf("%s: get %s/%s: %w", op, cd.namespace, cd.id, grpcError(err))
		}
		ct := resp.GetContainer()
		found = append(found, Container{ID: ct.GetID(), Namespace: cd.namespace, Name: ct.GetID(),
			Labels: ct.GetLabels(), Image: ct.GetImage()})
	}
	switch len(found) {
	case 0:
		if len(tried) == 0 {
			return Container{}, fmt.Errorf("%s: %w (no containerd namespace NS makes it NS-ID, as ctr names containers)", op, ErrNotFound)
		}
		return Container{}, fmt.Errorf("%s: %w (tried %s)", op, ErrNotFound, strings.Join(tried, ", "))
	case 1:
		if found[0].Labels == nil {
			found[0].Labels = map[string]string{}
		}
		return found[0], nil
	}
	var names []string
	for _, f := range found {
		names = append(names, f.Namespace+"/"+f.ID)
	}
	return Container{}, fmt.Errorf("%s: ambiguous: containers %s all match; name the namespace in labelsFrom.namespace",
		op, strings.Join(names, " and "))
}

// candidates are the readings of id to try.
func (c *Containerd) candidates(ctx context.Context, conn *grpc.ClientConn, id string) ([]candidate, error) {
	var out []candidate
	add := func(ns, cid string) {
		if IdentifierProblem(cid) == "" && !slices.Contains(out, candidate{ns, cid}) {
			out = append(out, candidate{ns, cid})
		}
	}
	if c.namespace != "" {
		if rest, ok := strings.CutPrefix(id, c.namespace+"-"); ok {
			add(c.namespace, rest)
		}
		add(c.namespace, id)
		return out, nil
	}
	resp, err := namespacesapi.NewNamespacesClient(conn).List(ctx, &namespacesapi.ListNamespacesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", grpcError(err))
	}
	for _, ns := range resp.GetNamespaces() {
		if rest, ok := strings.CutPrefix(id, ns.GetName()+"-"); ok {
			add(ns.GetName(), rest)
		}
	}
	return out, nil
}

// grpcError marks the errors of an API that cannot be reached (no
// socket, nobody listening, containerd starting or stopping) as
// ErrUnavailable.
func grpcError(err error) error {
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// IsUnavailable reports whether err says the runtime's API could not be
// reached; asking again later may succeed.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }
