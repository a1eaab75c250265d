package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// samples are measurements of one workload on one store: durations in
// nanoseconds, or plain numbers (allocations, bytes).
type samples []float64

func (s samples) quantile(q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	slices.Sort(c)
	// Linear interpolation between closest ranks.
	pos := q * float64(len(c)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return c[lo] + (c[hi]-c[lo])*(pos-float64(lo))
}

func (s samples) median() float64 { return s.quantile(0.5) }

// unit says how a row's numbers print.
type unit int

const (
	unitDuration unit = iota
	unitCount         // allocations and the like, 1 decimal
	unitBytes
)

func format(v float64, u unit) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch u {
	case unitCount:
		return fmt.Sprintf("%.1f", v)
	case unitBytes:
		return formatBytes(v)
	}
	d := time.Duration(v)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d >= time.Microsecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
	return fmt.Sprintf("%.0f ns", v)
}

func formatBytes(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// row is one line of the results table: a workload and the samples each
// store produced for it.
type row struct {
	name  string
	unit  unit
	cells map[string]samples // by impl name
	// rounds holds the same samples by round, for the spread of ratios.
	rounds map[string]map[int]samples
}

func (x *row) add(impl string, round int, v float64) {
	x.cells[impl] = append(x.cells[impl], v)
	if x.rounds[impl] == nil {
		x.rounds[impl] = map[int]samples{}
	}
	x.rounds[impl][round] = append(x.rounds[impl][round], v)
}

// roundRatios returns, for each round both a and b ran in, the ratio of
// their medians in that round.
func roundRatios(xa *row, a string, xb *row, b string) samples {
	var out samples
	for r, sa := range xa.rounds[a] {
		if sb, ok := xb.rounds[b][r]; ok {
			out = append(out, sa.median()/sb.median())
		}
	}
	return out
}

// check is one target: a ratio (or a plain value) against its bound.
type check struct {
	what   string
	value  float64
	rounds samples // the same ratio in each round, when it is one
	bound  float64
	atMost bool   // value must be <= bound; otherwise >= bound
	suffix string // "x" for ratios
}

func (c check) met() bool {
	if math.IsNaN(c.value) {
		return false
	}
	if c.atMost {
		return c.value <= c.bound
	}
	return c.value >= c.bound
}

// report collects everything a run prints.
type report struct {
	rows   []*row
	checks []check
	notes  []string
	extra  []string // other tables, already formatted
}

func (r *report) row(name string, u unit) *row {
	for _, x := range r.rows {
		if x.name == name {
			return x
		}
	}
	x := &row{name: name, unit: u, cells: map[string]samples{}, rounds: map[string]map[int]samples{}}
	r.rows = append(r.rows, x)
	return x
}

func (r *report) median(rowName, impl string) float64 {
	if x := r.find(rowName); x != nil {
		return x.cells[impl].median()
	}
	return math.NaN()
}

func (r *report) find(rowName string) *row {
	for _, x := range r.rows {
		if x.name == rowName {
			return x
		}
	}
	return nil
}

func (r *report) roundRatios(rowA, a, rowB, b string) samples {
	xa, xb := r.find(rowA), r.find(rowB)
	if xa == nil || xb == nil {
		return nil
	}
	return roundRatios(xa, a, xb, b)
}

// ratio adds a check that median(row, slow) / median(row, fast) >= bound:
// how many times faster fast is.
func (r *report) speedup(rowName, fast, slow string, bound float64) {
	r.checks = append(r.checks, check{
		what:  fmt.Sprintf("%s: %s ÷ %s (median)", rowName, slow, fast),
		value: r.median(rowName, slow) / r.median(rowName, fast), bound: bound, suffix: "x",
		rounds: r.roundRatios(rowName, slow, rowName, fast),
	})
}

// within adds a check that median(row, a) / median(row, b) <= bound.
func (r *report) within(rowA, a, rowB, b string, bound float64) {
	what := fmt.Sprintf("%s: %s ÷ %s (median)", rowA, a, b)
	if rowA != rowB {
		what = fmt.Sprintf("%s ÷ %s, %s (median)", rowA, rowB, a)
	}
	r.checks = append(r.checks, check{
		what:  what,
		value: r.median(rowA, a) / r.median(rowB, b), bound: bound, atMost: true, suffix: "x",
		rounds: r.roundRatios(rowA, a, rowB, b),
	})
}

func (r *report) atMost(what string, value, bound float64) {
	r.checks = append(r.checks, check{what: what, value: value, bound: bound, atMost: true})
}

var columns = []string{nameRaftbolt, nameDirect, nameBoltDB, nameWAL, nameBoltTx, nameFsync}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n### Medians\n\n")
	fmt.Fprintf(w, "| Workload | %s | raftbolt vs raft-boltdb/v2 | raftbolt vs raft-wal |\n", strings.Join(columns, " | "))
	fmt.Fprintf(w, "|---|%s---|---|\n", strings.Repeat("---|", len(columns)))
	for _, x := range r.rows {
		var cells []string
		for _, c := range columns {
			cells = append(cells, format(x.cells[c].median(), x.unit))
		}
		rb := x.cells[nameRaftbolt].median()
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x.name, strings.Join(cells, " | "),
			ratio(x.cells[nameBoltDB].median(), rb, x.unit), ratio(x.cells[nameWAL].median(), rb, x.unit))
	}
	fmt.Fprintf(w, "\nRatios are the peer's median over raftbolt's: above 1 raftbolt is faster (or uses less).\n")

	if len(r.checks) > 0 {
		fmt.Fprintf(w, "\n### Targets\n\n| Target | Measured | Bound | Met | Same ratio per round: p10 / median / p90 (rounds met) |\n|---|---|---|---|---|\n")
		for _, c := range r.checks {
			op := ">="
			if c.atMost {
				op = "<="
			}
			met := "yes"
			if !c.met() {
				met = "**no**"
			}
			val := fmt.Sprintf("%.2f%s", c.value, c.suffix)
			if c.suffix == "" {
				val = fmt.Sprintf("%.1f", c.value)
			}
			spread := ""
			if len(c.rounds) > 0 {
				n := 0
				for _, v := range c.rounds {
					if (check{value: v, bound: c.bound, atMost: c.atMost}).met() {
						n++
					}
				}
				spread = fmt.Sprintf("%.2f / %.2f / %.2f (%d of %d)", c.rounds.quantile(0.1), c.rounds.median(), c.rounds.quantile(0.9), n, len(c.rounds))
			}
			fmt.Fprintf(w, "| %s | %s | %s %g%s | %s | %s |\n", c.what, val, op, c.bound, c.suffix, met, spread)
		}
	}

	var floorRows []*row
	for _, x := range r.rows {
		if len(x.cells[nameBoltTx]) > 0 {
			floorRows = append(floorRows, x)
		}
	}
	if len(floorRows) > 0 {
		fmt.Fprintf(w, "\n### Appends over the bbolt floor\n\nEach store's median over the bare bbolt transaction's, same run. "+
			"A store built on bbolt commits cannot go below 1.00x without writing less than one bbolt transaction does.\n\n")
		fmt.Fprintf(w, "| Workload | %s | %s | %s | %s |\n|---|---|---|---|---|\n", nameDirect, nameBoltDB, nameWAL, nameFsync)
		for _, x := range floorRows {
			fl := x.cells[nameBoltTx].median()
			fmt.Fprintf(w, "| %s | %.2fx | %.2fx | %.2fx | %.2fx |\n", x.name, x.cells[nameDirect].median()/fl,
				x.cells[nameBoltDB].median()/fl, x.cells[nameWAL].median()/fl, x.cells[nameFsync].median()/fl)
		}
	}

	fmt.Fprintf(w, "\n### Spread\n\n| Workload | Store | n | p10 | p25 | median | p75 | p90 |\n|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.rows {
		for _, c := range columns {
			s := x.cells[c]
			if len(s) == 0 {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s |\n", x.name, c, len(s),
				format(s.quantile(0.1), x.unit), format(s.quantile(0.25), x.unit), format(s.median(), x.unit),
				format(s.quantile(0.75), x.unit), format(s.quantile(0.9), x.unit))
		}
	}
	for _, e := range r.extra {
		fmt.Fprintf(w, "\n%s", e)
	}
	if len(r.notes) > 0 {
		fmt.Fprintf(w, "\n### Notes\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

func ratio(peer, raftbolt float64, u unit) string {
	if math.IsNaN(peer) || math.IsNaN(raftbolt) || raftbolt == 0 || u == unitBytes && peer == 0 {
		return ""
	}
	return fmt.Sprintf("%.2fx", peer/raftbolt)
}
