package flows

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The load generator and the server run as processes of their own (this
// test binary again, in a and in b), as workloads do: the collector then
// competes with them for the machine as an agent would, not inside one Go
// scheduler.
func TestMain(m *testing.M) {
	switch os.Getenv("BHFL_ROLE") {
	case "serve":
		serveMain(os.Getenv("BHFL_ADDR"), os.Getenv("BHFL_PORTS"))
	case "load":
		loadMain(os.Getenv("BHFL_DST"))
	default:
		os.Exit(m.Run())
	}
}

// serveMain accepts on every port of "first-last" and closes each
// connection at once, until killed.
func serveMain(addr, ports string) {
	lo, hi, _ := strings.Cut(ports, "-")
	first, _ := strconv.Atoi(lo)
	last, _ := strconv.Atoi(hi)
	for p := first; p <= last; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(p)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for range 2 {
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						continue
					}
					c.Close()
				}
			}()
		}
	}
	fmt.Println("ready")
	select {}
}

// loadMain connects to dst from BHFL_WORKERS goroutines for BHFL_SECONDS,
// closing each connection with a reset (no TIME_WAIT), and prints how
// many were made and how many failed.
func loadMain(dst string) {
	workers, _ := strconv.Atoi(os.Getenv("BHFL_WORKERS"))
	secs, _ := strconv.ParseFloat(os.Getenv("BHFL_SECONDS"), 64)
	var ok, bad atomic.Uint64
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Duration(secs * float64(time.Second)))
	for range workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				c, err := net.DialTimeout("tcp", dst, time.Second)
				if err != nil {
					bad.Add(1)
					continue
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	fmt.Println(ok.Load(), bad.Load())
	os.Exit(0)
}
