package k8s

import (
	"strconv"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// namedServices matches a named port of any protocol: the name, resolved
// against the destination workload, fixes both port and protocol.
func namedServices(name string) []policy.Service {
	return []policy.Service{
		{Protocol: policy.TCP, Name: name},
		{Protocol: policy.UDP, Name: name},
		{Protocol: policy.SCTP, Name: name},
	}
}

// anpPorts converts the ports of an AdminNetworkPolicy or
// BaselineAdminNetworkPolicy rule; nil is every port.
func (c *checker) anpPorts(ports *[]anpPort, rulePos source.Pos, path string) (out []policy.Service, named bool) {
	if ports == nil {
		return nil, false
	}
	if len(*ports) == 0 || len(*ports) > 100 {
		c.add(rulePos, path, "ports must list 1 to 100 ports when given, found %d (leave it out to match every port)", len(*ports))
	}
	for i := range *ports {
		p := &(*ports)[i]
		pp := path + "[" + strconv.Itoa(i) + "]"
		n := 0
		for _, set := range []bool{p.PortNumber != nil, p.NamedPort != nil, p.PortRange != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			c.add(p.Pos, pp, "exactly one of portNumber, namedPort and portRange must be given, found %d", n)
			continue
		}
		switch {
		case p.PortNumber != nil:
			n := p.PortNumber
			proto := c.protocol(n.Pos, pp+".portNumber.protocol", n.Protocol)
			if n.Port == nil {
				c.add(n.Pos, pp+".portNumber.port", "port is required (1 to 65535)")
				continue
			}
			if c.checkPortNumber(n.Pos, pp+".portNumber.port", *n.Port) {
				out = append(out, policy.Service{Protocol: proto, Port: *n.Port})
			}
		case p.PortRange != nil:
			r := p.PortRange
			proto := c.protocol(r.Pos, pp+".portRange.protocol", r.Protocol)
			if s, ok := c.portRange(r.Pos, pp+".portRange", r.Start, r.End); ok {
				s.Protocol = proto
				out = append(out, s)
			}
		default:
			if *p.NamedPort == "" {
				c.add(p.Pos, pp+".namedPort", "namedPort may not be empty")
				continue
			}
			named = true
			out = append(out, namedServices(*p.NamedPort)...)
		}
	}
	return out, named
}

// portRange checks an inclusive range: start < end, both 1 to 65535.
func (c *checker) portRange(pos source.Pos, path string, start, end *int) (policy.Service, bool) {
	if start == nil || end == nil {
		c.add(pos, path, "start and end are both required (1 to 65535, start < end)")
		return policy.Service{}, false
	}
	ok := c.checkPortNumber(pos, path+".start", *start)
	ok = c.checkPortNumber(pos, path+".end", *end) && ok
	if *start >= *end {
		c.add(pos, path, "start %d must be less than end %d", *start, *end)
		ok = false
	}
	return policy.Service{Port: *start, EndPort: *end}, ok
}

// cnpProtocols converts the protocols of a ClusterNetworkPolicy rule; nil is
// every protocol and port.
func (c *checker) cnpProtocols(protos []cnpProtocol, rulePos source.Pos, path string) (out []policy.Service, named bool) {
	if protos == nil {
		return nil, false
	}
	if len(protos) == 0 || len(protos) > 25 {
		c.add(rulePos, path, "protocols must list 1 to 25 entries when given, found %d (leave it out to match every protocol)", len(protos))
	}
	for i := range protos {
		p := &protos[i]
		pp := path + "[" + strconv.Itoa(i) + "]"
		type choice struct {
			name  string
			proto policy.Protocol
			ports *cnpProtocolPorts
		}
		var set []choice
		for _, ch := range []choice{{"tcp", policy.TCP, p.TCP}, {"udp", policy.UDP, p.UDP}, {"sctp", policy.SCTP, p.SCTP}} {
			if ch.ports != nil {
				set = append(set, ch)
			}
		}
		if n := len(set) + btoi(p.DestinationNamedPort != nil); n != 1 {
			c.add(p.Pos, pp, "exactly one of tcp, udp, sctp and destinationNamedPort must be given, found %d", n)
			continue
		}
		if p.DestinationNamedPort != nil {
			if *p.DestinationNamedPort == "" {
				c.add(p.Pos, pp+".destinationNamedPort", "destinationNamedPort may not be empty")
				continue
			}
			named = true
			out = append(out, namedServices(*p.DestinationNamedPort)...)
			continue
		}
		if s, ok := c.cnpPort(set[0].ports, pp+"."+set[0].name); ok {
			s.Protocol = set[0].proto
			out = append(out, s)
		}
	}
	return out, named
}

func (c *checker) cnpPort(pp *cnpProtocolPorts, path string) (policy.Service, bool) {
	dp := pp.DestinationPort
	if dp == nil {
		c.add(pp.Pos, path+".destinationPort", "destinationPort is required (number or range)")
		return policy.Service{}, false
	}
	path += ".destinationPort"
	switch {
	case (dp.Number == nil) == (dp.Range == nil):
		c.add(dp.Pos, path, "exactly one of number and range must be given")
		return policy.Service{}, false
	case dp.Number != nil:
		return policy.Service{Port: *dp.Number}, c.checkPortNumber(dp.Pos, path+".number", *dp.Number)
	}
	return c.portRange(dp.Range.Pos, path+".range", dp.Range.Start, dp.Range.End)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
