// Commstime on goroutines and unbuffered channels: the Go baseline of bench/commstime.
//
// The same network as bench/commstime/run.py (Prefix, sequential Delta, Succ, Consumer on
// rendezvous channels); the consumer times `cycles` values after the first one arrives.
// Prints one JSON line: the samples in microseconds per communication (4 per cycle).
//
// Usage: go run commstime.go -cycles 100000 -runs 5
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

func commstime(cycles int) float64 {
	a, b, c, d := make(chan int), make(chan int), make(chan int), make(chan int)
	total := cycles + 1
	go func() { // prefix
		a <- 0
		for i := 0; i < total-1; i++ {
			a <- <-d
		}
		<-d
	}()
	go func() { // delta, sequential outputs
		for i := 0; i < total; i++ {
			v := <-a
			b <- v
			c <- v
		}
	}()
	go func() { // succ
		for i := 0; i < total; i++ {
			d <- (<-c + 1)
		}
	}()
	first := <-b // consumer
	start := time.Now()
	last := first
	for i := 0; i < cycles; i++ {
		last = <-b
	}
	elapsed := time.Since(start)
	if last != first+cycles {
		fmt.Fprintf(os.Stderr, "values lost or reordered: expected %d, got %d\n", first+cycles, last)
		os.Exit(1)
	}
	return float64(elapsed.Nanoseconds()) / 1000.0 / float64(4*cycles)
}

func main() {
	cycles := flag.Int("cycles", 100000, "cycles per run")
	runs := flag.Int("runs", 3, "timed runs")
	flag.Parse()
	commstime(1000) // warm-up
	samples := make([]float64, 0, *runs)
	for i := 0; i < *runs; i++ {
		samples = append(samples, commstime(*cycles))
	}
	out, _ := json.Marshal(map[string]any{
		"samples_us_per_comm": samples,
		"version":             runtime.Version(),
		"gomaxprocs":          runtime.GOMAXPROCS(0),
	})
	fmt.Println(string(out))
}
