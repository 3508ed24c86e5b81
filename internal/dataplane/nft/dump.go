package nft

import (
	"fmt"
	"io"
)

// Dump writes the live table in readable form.
func (d *Dataplane) Dump(w io.Writer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := readTable(d.conn)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "table inet %s: %d chains, %d sets, %d counters\n", TableName, len(f.chains), len(f.sets), len(f.counters))
	return nil
}
