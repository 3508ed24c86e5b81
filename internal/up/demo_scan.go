package up

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The demo's scan: once, shortly after the clients start, the buy-side
// signal tries scanPorts ports of the payment processor that nothing
// allows. The baseline denies and logs each, the flow collector stores
// them, and the manager's scan detector raises an alert that `bulkhead
// alerts` shows (docs/flows.md, "Alerts from the flows").
const (
	scanFrom, scanTo = "buy-signal", "payment-processor"
	scanFirstPort    = 1000
	scanPorts        = 30 // above the detector's 20 distinct denied destinations a minute
	scanDelay        = 3 * time.Second
)

func (d *demoFloor) scanOnce(ctx context.Context) {
	from, to := d.wls[scanFrom], d.wls[scanTo]
	if from == nil || to == nil {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(scanDelay):
	}
	var wg sync.WaitGroup
	for p := range scanPorts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = from.ns.Do(func() error {
				dl := net.Dialer{Timeout: 300 * time.Millisecond}
				c, err := dl.DialContext(ctx, "tcp", netip.AddrPortFrom(to.addr, uint16(scanFirstPort+p)).String())
				if err == nil {
					c.Close()
				}
				return nil
			})
		}()
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	wg.Wait()
	if ctx.Err() == nil {
		d.printf("%s  scan     %-27s → %s ports %d-%d: each denied by the baseline; `bulkhead alerts` shows the scan alert\n",
			time.Now().Format("15:04:05"), from.key(), to.key(), scanFirstPort, scanFirstPort+scanPorts-1)
	}
}
