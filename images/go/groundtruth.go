// groundtruth for Go: each round does the same unit of work 6 times in cpu60, 3 times in
// cpu30 and once in cpu10, so a correct profile shows them at 60%, 30% and 10% (as
// main.cpu60, main.cpu30, main.cpu10: Go keeps frame pointers and its symbol table, so the
// eBPF sampler names them like any native code).
//
//	go build -o groundtruth-go ./images/go && ./groundtruth-go [--rounds N]
//
// --rounds N: do N rounds, then print `groundtruth: cpu SECONDS s wall SECONDS s` on stderr
// and exit (fixed work, for scripts/bench-overhead.sh).
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

var sink uint64

// spin is the unit of work; kept out of line so each caller's share is its own. It works on
// a stack array so that it has a frame: Go gives a leaf function without locals no frame
// pointer set-up, and a frame-pointer walk (ours, perf's) then skips that leaf's caller; that
// limit is real (docs/ARCHITECTURE.md) but this program is here to check the split.
//
//go:noinline
func spin(x uint64) uint64 {
	var lanes [4]uint64
	for i := 0; i < 200000; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		lanes[i&3] ^= x
	}
	return x ^ lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3]
}

//go:noinline
func cpu60(s uint64) uint64 {
	for i := 0; i < 6; i++ {
		s = spin(s)
	}
	return s
}

//go:noinline
func cpu30(s uint64) uint64 {
	for i := 0; i < 3; i++ {
		s = spin(s)
	}
	return s
}

//go:noinline
func cpu10(s uint64) uint64 { return spin(s) }

func main() {
	rounds := int64(-1)
	if len(os.Args) == 3 && os.Args[1] == "--rounds" {
		n, err := strconv.ParseInt(os.Args[2], 10, 64)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "groundtruth: --rounds needs a positive number, not %q\n", os.Args[2])
			os.Exit(2)
		}
		rounds = n
	} else if len(os.Args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: groundtruth [--rounds N]")
		os.Exit(2)
	}
	started := time.Now()
	s := uint64(1)
	for done := int64(0); rounds < 0 || done < rounds; done++ {
		s = cpu60(s)
		s = cpu30(s)
		s = cpu10(s)
		sink = s
	}
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
	fmt.Fprintf(os.Stderr, "groundtruth: cpu %.3f s wall %.3f s\n", cpu.Seconds(), time.Since(started).Seconds())
}
