package benchdataplane

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// conntrackOnly programs the floor of every stateful firewall into the
// host namespace: an inet table whose forward chain accepts established
// and related packets, then accepts everything else. Conntrack's hooks are
// registered in a namespace only once a rule uses ct, so this is what
// connection tracking alone costs.
func conntrackOnly(host *netns.NS) error {
	h, err := host.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		return fmt.Errorf("bench: nftables in %s: %w", host.Name, err)
	}
	defer c.CloseLasting()
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "bhbn_ct"})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "forward", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("bench: program conntrack-only table in %s: %w", host.Name, err)
	}
	return nil
}

// iptablesRestore loads rules (iptables-restore form) into the host
// namespace with Debian's iptables, which is iptables-nft on Debian 12
// (the variant Docker uses there): the rules land in an nftables table
// "ip filter" and are evaluated one after the other.
func iptablesRestore(host *netns.NS, rules string) error {
	cmd := exec.Command("ip", "netns", "exec", host.Name, "iptables-restore")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: iptables-restore in %s: %w: %s", host.Name, err, out)
	}
	return nil
}

// iptablesVariant is `iptables --version`, which names the backend.
func iptablesVariant() string {
	out, err := exec.Command("iptables", "--version").Output()
	if err != nil {
		return "unknown: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}

// ensureIptables installs Debian's iptables when it is missing.
func ensureIptables() error {
	if _, err := exec.LookPath("iptables-restore"); err == nil {
		return nil
	}
	cmd := exec.Command("apt-get", "install", "-y", "-q", "iptables")
	cmd.Env = append(cmd.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: apt-get install iptables: %w: %s", err, out)
	}
	return nil
}
