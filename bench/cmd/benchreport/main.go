// Command benchreport turns the JSON lines written by bench/run into a
// side-by-side table (Posthorn vs Postfix, with ratios) on stdout, and
// optionally into Markdown and JSON files.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type loadOut struct {
	Accepted         int64    `json:"accepted"`
	Failed           int64    `json:"failed"`
	Seconds          float64  `json:"seconds"`
	AcceptedPerSec   float64  `json:"accepted_per_sec"`
	LatP50ms         float64  `json:"lat_p50_ms"`
	LatP99ms         float64  `json:"lat_p99_ms"`
	Delivered        int64    `json:"delivered"`
	DeliveredSeconds float64  `json:"delivered_seconds"`
	DeliveredPerSec  float64  `json:"delivered_per_sec"`
	DeliveredAll     bool     `json:"delivered_all"`
	Errors           []string `json:"errors"`
	ClientCPUSec     float64  `json:"client_cpu_sec"`
}

// otherCores estimates how many CPUs' worth of work other users of the
// machine did during a load point: machine CPU time minus the server's and
// the load generator's, over the wall time. -1 if unknown.
func otherCores(r record) float64 {
	if r.MachUsec == 0 || r.WallUsec == 0 || r.Load == nil {
		return -1
	}
	o := float64(r.MachUsec) - float64(r.CPUUsec) - r.Load.ClientCPUSec*1e6
	if o < 0 {
		o = 0
	}
	return o / float64(r.WallUsec)
}

type mem struct {
	RSSKB   int64  `json:"rss_kb"`
	PSSKB   int64  `json:"pss_kb"`
	Procs   int    `json:"procs"`
	CgMemCu *int64 `json:"cgroup_memory_current"`
}

type record struct {
	Kind   string `json:"kind"`
	Server string `json:"server"`
	Reason string `json:"reason"`

	// load
	C        int      `json:"c"`
	N        int      `json:"n"`
	Rep      int      `json:"rep"`
	CPUUsec  int64    `json:"cpu_usec"`
	MachUsec int64    `json:"machine_busy_usec"`
	WallUsec int64    `json:"wall_usec"`
	LoadAvgB float64  `json:"loadavg_before"`
	LoadAvgA float64  `json:"loadavg_after"`
	Load     *loadOut `json:"load"`

	// smtp-source
	RC      int     `json:"rc"`
	Seconds float64 `json:"seconds"`

	// idle
	Target      int     `json:"target"`
	RampSeconds int     `json:"ramp_seconds"`
	LoadAvg     float64 `json:"loadavg"`
	Established int     `json:"server_side_established"`
	Aborted     string  `json:"aborted"`
	Base        *mem    `json:"base"`
	Idle        *mem    `json:"idle"`
	Client      *struct {
		Established int     `json:"established"`
		Failed      int     `json:"failed"`
		Seconds     float64 `json:"seconds"`
	} `json:"client"`

	// meta
	Date    string `json:"date"`
	Kernel  string `json:"kernel"`
	CPUs    int    `json:"cpus"`
	MemKB   int64  `json:"mem_kb"`
	Reps    int    `json:"reps"`
	CPUMeth string `json:"cpu_method"`
	Size    int    `json:"size"`
	PFVer   string `json:"postfix_version"`
	PHRev   string `json:"posthorn_rev"`
	Servers string `json:"servers"`
}

// row is one line of the comparison table.
type row struct {
	Metric   string   `json:"metric"`
	Clients  string   `json:"clients"`
	Better   string   `json:"better"` // "higher" or "lower"
	Postfix  *float64 `json:"postfix"`
	Posthorn *float64 `json:"posthorn"`
	Ratio    *float64 `json:"ratio_posthorn_over_postfix"`
	Note     string   `json:"note,omitempty"`
}

func main() {
	in := flag.String("in", "", "results.jsonl written by bench/run (default stdin)")
	mdOut := flag.String("md", "", "write a Markdown report here")
	jsonOut := flag.String("json", "", "write a JSON report here")
	flag.Parse()

	var r io.Reader = os.Stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
		defer f.Close()
		r = f
	}
	var recs []record
	var raw []json.RawMessage
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: skipping bad line: %v: %s\n", err, line)
			continue
		}
		recs = append(recs, rec)
		raw = append(raw, json.RawMessage(line))
	}

	var meta record
	for _, rec := range recs {
		if rec.Kind == "meta" {
			meta = rec
		}
	}
	var notes, busy []string
	for _, rec := range recs {
		switch rec.Kind {
		case "meta":
			meta = rec
		case "skip":
			notes = append(notes, fmt.Sprintf("%s skipped: %s", rec.Server, rec.Reason))
		case "load":
			if o := otherCores(rec); o > 0.2 {
				busy = append(busy, fmt.Sprintf("%s c=%d: %.2f", rec.Server, rec.C, o))
			}
			if rec.Load != nil && rec.Load.Failed > 0 {
				notes = append(notes, fmt.Sprintf("%s c=%d: %d messages failed (first error: %s)", rec.Server, rec.C, rec.Load.Failed, first(rec.Load.Errors)))
			}
			if rec.Load != nil && !rec.Load.DeliveredAll {
				notes = append(notes, fmt.Sprintf("%s c=%d: only %d of %d accepted messages seen delivered", rec.Server, rec.C, rec.Load.Delivered, rec.Load.Accepted))
			}
		case "idle":
			if rec.Aborted != "" {
				notes = append(notes, fmt.Sprintf("%s idle test stopped early: %s", rec.Server, rec.Aborted))
			}
			if rec.Client != nil {
				notes = append(notes, fmt.Sprintf("%s: opening %d idle connections took %d s (load average %.1f)", rec.Server, rec.Target, rec.RampSeconds, rec.LoadAvg))
			}
			if rec.Server == "posthorn" && rec.Idle != nil && rec.Established >= 10000 {
				mb := float64(rec.Idle.RSSKB) * 1024 / 1e6
				verdict := "meets"
				if mb > 200 {
					verdict = "MISSES"
				}
				notes = append(notes, fmt.Sprintf("posthorn with %d idle connections: VmRSS %.1f MB, %s the target of <= 200 MB", rec.Established, mb, verdict))
			}
			if rec.Client != nil && rec.Client.Established < rec.Target {
				notes = append(notes, fmt.Sprintf("%s held %d of %d idle connections (client side), %d open server side at measurement", rec.Server, rec.Client.Established, rec.Target, rec.Established))
			}
		}
	}

	if len(busy) > 0 {
		notes = append(notes, fmt.Sprintf("other work on the machine (CPUs busy outside server and load tool) during: %s; absolute figures are depressed there, compare ratios", strings.Join(busy, ", ")))
	}
	if meta.Reps > 1 {
		notes = append(notes, fmt.Sprintf("each load figure is the median of %d interleaved repetitions", meta.Reps))
	}
	rows := buildRows(recs)
	title := "Posthorn vs Postfix: SMTP on loopback to Maildir"
	hdr := fmt.Sprintf("%s, kernel %s, %d CPUs, %.1f GiB RAM, %d-byte messages, CPU accounting: %s, Postfix %s, Posthorn %s",
		meta.Date, meta.Kernel, meta.CPUs, float64(meta.MemKB)/1024/1024, meta.Size, meta.CPUMeth, orDash(meta.PFVer), orDash(meta.PHRev))

	fmt.Println(title)
	fmt.Println(hdr)
	fmt.Println()
	printText(os.Stdout, rows)
	if len(notes) > 0 {
		fmt.Println()
		for _, n := range notes {
			fmt.Println("note:", n)
		}
	}

	if *mdOut != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "# %s\n\n%s\n\n", title, hdr)
		b.WriteString("| metric | clients | better | Postfix | Posthorn | Posthorn/Postfix | note |\n|---|---:|---|---:|---:|---:|---|\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Metric, r.Clients, r.Better, fnum(r.Postfix), fnum(r.Posthorn), fratio(r.Ratio), r.Note)
		}
		if len(notes) > 0 {
			b.WriteString("\n")
			for _, n := range notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
		}
		b.WriteString("\nSee bench/README.md for what each figure means. Compare ratios within one run; absolute figures depend on the (shared, noisy) machine.\n")
		if err := os.WriteFile(*mdOut, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
	}
	if *jsonOut != "" {
		out := map[string]any{"title": title, "header": hdr, "rows": rows, "notes": notes, "records": raw}
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[0]
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ptr(v float64) *float64 { return &v }

func buildRows(recs []record) []row {
	type key struct {
		server string
		c      int
	}
	loads := map[key][]record{}
	srcs := map[key][]record{}
	idles := map[string]record{}
	clientSet := map[int]bool{}
	for _, r := range recs {
		switch r.Kind {
		case "load":
			if r.Load != nil {
				loads[key{r.Server, r.C}] = append(loads[key{r.Server, r.C}], r)
				clientSet[r.C] = true
			}
		case "smtp-source":
			srcs[key{r.Server, r.C}] = append(srcs[key{r.Server, r.C}], r)
			clientSet[r.C] = true
		case "idle":
			idles[r.Server] = r
		}
	}
	var clients []int
	for c := range clientSet {
		clients = append(clients, c)
	}
	sort.Ints(clients)

	var rows []row
	add := func(metric, better string, c int, f func(record) (float64, bool), from map[key][]record) {
		r := row{Metric: metric, Clients: fmt.Sprint(c), Better: better}
		r.Postfix = median(from[key{"postfix", c}], f)
		r.Posthorn = median(from[key{"posthorn", c}], f)
		if r.Postfix == nil && r.Posthorn == nil {
			return
		}
		if r.Better != "-" && r.Postfix != nil && r.Posthorn != nil && *r.Postfix != 0 {
			r.Ratio = ptr(*r.Posthorn / *r.Postfix)
		}
		rows = append(rows, r)
	}
	for _, c := range clients {
		add("accepted/s", "higher", c, func(r record) (float64, bool) { return r.Load.AcceptedPerSec, true }, loads)
	}
	for _, c := range clients {
		add("delivered/s", "higher", c, func(r record) (float64, bool) {
			return r.Load.DeliveredPerSec, r.Load.DeliveredSeconds > 0
		}, loads)
	}
	for _, c := range clients {
		add("server CPU s / 1000 msgs", "lower", c, func(r record) (float64, bool) {
			if r.Load.Accepted == 0 {
				return 0, false
			}
			return float64(r.CPUUsec) / 1e6 / float64(r.Load.Accepted) * 1000, true
		}, loads)
	}
	for _, c := range clients {
		add("latency p50 ms (MAIL..250)", "lower", c, func(r record) (float64, bool) { return r.Load.LatP50ms, r.Load.Accepted > 0 }, loads)
	}
	for _, c := range clients {
		add("latency p99 ms (MAIL..250)", "lower", c, func(r record) (float64, bool) { return r.Load.LatP99ms, r.Load.Accepted > 0 }, loads)
	}
	for _, c := range clients {
		add("load tool CPU s / 1000 msgs", "-", c, func(r record) (float64, bool) {
			return r.Load.ClientCPUSec / float64(r.Load.Accepted) * 1000, r.Load.Accepted > 0 && r.Load.ClientCPUSec > 0
		}, loads)
	}
	for _, c := range clients {
		add("other work on machine, CPUs", "-", c, func(r record) (float64, bool) {
			o := otherCores(r)
			return o, o >= 0
		}, loads)
	}
	for _, c := range clients {
		add("smtp-source accepted/s", "higher", c, func(r record) (float64, bool) {
			return float64(r.N) / r.Seconds, r.RC == 0 && r.Seconds > 0
		}, srcs)
	}

	// Idle memory.
	if len(idles) > 0 {
		held := func(r record) int {
			if r.Established > 0 {
				return r.Established
			}
			if r.Client != nil {
				return r.Client.Established
			}
			return 0
		}
		var conns []string
		for _, s := range []string{"postfix", "posthorn"} {
			if r, ok := idles[s]; ok {
				conns = append(conns, fmt.Sprintf("%s %d/%d", s, held(r), r.Target))
			}
		}
		note := "idle conns held: " + strings.Join(conns, ", ")
		sameCount := true
		if a, ok := idles["postfix"]; ok {
			if b, ok := idles["posthorn"]; ok {
				sameCount = held(a) == held(b)
			}
		}
		// perConn rows are comparable across different connection counts;
		// the raw totals only when both servers held the same number.
		memRow := func(metric, better string, perConn bool, f func(record) (float64, bool)) {
			r := row{Metric: metric, Clients: "idle", Better: better, Note: note}
			if rec, ok := idles["postfix"]; ok {
				if v, ok := f(rec); ok {
					r.Postfix = ptr(v)
				}
			}
			if rec, ok := idles["posthorn"]; ok {
				if v, ok := f(rec); ok {
					r.Posthorn = ptr(v)
				}
			}
			if r.Postfix != nil && r.Posthorn != nil && *r.Postfix != 0 && (perConn || sameCount) {
				r.Ratio = ptr(*r.Posthorn / *r.Postfix)
			}
			rows = append(rows, r)
		}
		memRow("memory with idle conns, RSS sum MiB", "lower", false, func(r record) (float64, bool) {
			return float64(r.Idle.RSSKB) / 1024, r.Idle != nil
		})
		memRow("memory with idle conns, PSS sum MiB", "lower", false, func(r record) (float64, bool) {
			return float64(r.Idle.PSSKB) / 1024, r.Idle != nil
		})
		memRow("server processes with idle conns", "lower", false, func(r record) (float64, bool) {
			return float64(r.Idle.Procs), r.Idle != nil
		})
		memRow("PSS KiB per idle conn (delta)", "lower", true, func(r record) (float64, bool) {
			h := held(r)
			if r.Idle == nil || r.Base == nil || h == 0 {
				return 0, false
			}
			return float64(r.Idle.PSSKB-r.Base.PSSKB) / float64(h), true
		})
		memRow("RSS MiB extrapolated to 10,000 conns", "lower", true, func(r record) (float64, bool) {
			h := held(r)
			if r.Idle == nil || r.Base == nil || h == 0 {
				return 0, false
			}
			return (float64(r.Base.RSSKB) + float64(r.Idle.RSSKB-r.Base.RSSKB)/float64(h)*10000) / 1024, true
		})
		memRow("PSS MiB extrapolated to 10,000 conns", "lower", true, func(r record) (float64, bool) {
			h := held(r)
			if r.Idle == nil || r.Base == nil || h == 0 {
				return 0, false
			}
			return (float64(r.Base.PSSKB) + float64(r.Idle.PSSKB-r.Base.PSSKB)/float64(h)*10000) / 1024, true
		})
	}
	return rows
}

// median of f over recs, ignoring records f declines; nil if none.
func median(recs []record, f func(record) (float64, bool)) *float64 {
	var vs []float64
	for _, r := range recs {
		if v, ok := f(r); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return nil
	}
	sort.Float64s(vs)
	m := len(vs) / 2
	if len(vs)%2 == 1 {
		return ptr(vs[m])
	}
	return ptr((vs[m-1] + vs[m]) / 2)
}

func fnum(v *float64) string {
	if v == nil {
		return "-"
	}
	switch a := *v; {
	case a >= 1000:
		return fmt.Sprintf("%.0f", a)
	case a >= 100:
		return fmt.Sprintf("%.1f", a)
	default:
		return fmt.Sprintf("%.2f", a)
	}
}

func fratio(v *float64) string {
	if v == nil {
		return "-"
	}
	if *v < 0.1 {
		return fmt.Sprintf("%.3fx", *v)
	}
	return fmt.Sprintf("%.2fx", *v)
}

func printText(w io.Writer, rows []row) {
	fmt.Fprintf(w, "%-38s %7s %6s %11s %11s %9s\n", "metric", "clients", "better", "postfix", "posthorn", "ph/pf")
	fmt.Fprintln(w, strings.Repeat("-", 87))
	last, lastClients := "", ""
	for _, r := range rows {
		if last != "" && r.Metric != last && (r.Clients != "idle" || lastClients != "idle") {
			fmt.Fprintln(w)
		}
		last, lastClients = r.Metric, r.Clients
		fmt.Fprintf(w, "%-38s %7s %6s %11s %11s %9s\n", r.Metric, r.Clients, r.Better, fnum(r.Postfix), fnum(r.Posthorn), fratio(r.Ratio))
	}
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintln(w)
			fmt.Fprintln(w, r.Note)
			break
		}
	}
}
