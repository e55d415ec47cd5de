// Package archtest owns the checks of Posthorn's package layering: which
// package may import which. The rules keep the storage and delivery side
// free of the SMTP pipeline, keep the receiving server away from the
// spool, and leave the configuration to the composition root in cmd/.
package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pkg is what `go list -json` says about one package that matters here.
type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string // direct, non-test imports
	Deps       []string // every package the non-test build depends on
	Error      *struct{ Err string }
}

// graph is the packages of one `go list -deps` run, by import path.
type graph struct {
	module string
	pkgs   map[string]*pkg
}

// rel turns an import path of the module into its path in the repository
// ("internal/spool"), and returns "" for packages outside the module.
func (g *graph) rel(path string) string {
	if path == g.module {
		return "."
	}
	r, ok := strings.CutPrefix(path, g.module+"/")
	if !ok {
		return ""
	}
	return r
}

// in reports whether the module-relative path p is dir or below it.
func in(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func inAny(p string, dirs ...string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return in(p, d) })
}

func (g *graph) standard(path string) bool {
	p, ok := g.pkgs[path]
	return ok && p.Standard
}

// ownPackages are the module's packages, sorted.
func (g *graph) ownPackages() []*pkg {
	var out []*pkg
	for path, p := range g.pkgs {
		if g.rel(path) != "" {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *pkg) int { return strings.Compare(a.ImportPath, b.ImportPath) })
	return out
}

// pipeline packages run the SMTP transaction or configure it; storage and
// delivery must work without them.
var pipeline = []string{"internal/smtpserver", "internal/queue", "internal/policy", "internal/config"}

// violations checks every rule and describes each broken one.
func (g *graph) violations() []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	for _, p := range g.ownPackages() {
		me := g.rel(p.ImportPath)
		direct := func(dir string) []string {
			var hits []string
			for _, imp := range p.Imports {
				if r := g.rel(imp); r != "" && in(r, dir) {
					hits = append(hits, r)
				}
			}
			return hits
		}
		deps := func(dirs ...string) []string {
			var hits []string
			for _, d := range p.Deps {
				if r := g.rel(d); r != "" && inAny(r, dirs...) {
					hits = append(hits, r)
				}
			}
			return hits
		}

		// Storage, delivery and DSN generation know nothing of the pipeline.
		if inAny(me, "internal/spool", "internal/deliver", "internal/dsn") {
			if hits := deps(pipeline...); len(hits) > 0 {
				bad("%s depends on pipeline packages %v", me, hits)
			}
		}
		// Only the queue joins storage and delivery. cmd/ is the
		// composition root: it builds both to hand them to the queue.
		if me != "internal/queue" && !in(me, "cmd") {
			if s, d := direct("internal/spool"), direct("internal/deliver"); len(s) > 0 && len(d) > 0 {
				bad("%s imports both %v and %v: only internal/queue may join the spool and delivery", me, s, d)
			}
		}
		// The SMTP server reaches the spool through its own interfaces.
		if in(me, "internal/smtpserver") {
			if hits := deps("internal/spool", "internal/queue", "internal/config"); len(hits) > 0 {
				bad("%s depends on %v", me, hits)
			}
		}
		// Configuration is read by the composition root alone.
		if !in(me, "cmd") && !in(me, "internal/config") {
			if hits := direct("internal/config"); len(hits) > 0 {
				bad("%s imports %v: only cmd/... may", me, hits)
			}
		}
	}

	// The protocol and address packages are leaves: the standard library,
	// the address package for smtp, IDNA for address (with what IDNA needs).
	out = append(out, g.leaf("internal/smtp", g.module+"/internal/address")...)
	out = append(out, g.leaf("internal/address", "golang.org/x/net/idna")...)
	out = append(out, g.leaf("internal/smtpclient", g.module+"/internal/smtp", g.module+"/internal/address")...)
	out = append(out, g.leaf("internal/dsn", g.module+"/internal/envelope", g.module+"/internal/address")...)
	out = append(out, g.leaf("internal/dnsx", "github.com/miekg/dns")...)
	return out
}

// leaf checks that package rel imports only the standard library and
// allowed, and depends on nothing beyond them and their own dependencies.
func (g *graph) leaf(rel string, allowed ...string) []string {
	p, ok := g.pkgs[g.module+"/"+rel]
	if !ok {
		return []string{rel + " is missing from the package list"}
	}
	var out []string
	ok2 := map[string]bool{}
	for _, a := range allowed {
		ok2[a] = true
		if ap, found := g.pkgs[a]; found {
			for _, d := range ap.Deps {
				ok2[d] = true
			}
		}
	}
	for _, imp := range p.Imports {
		if !g.standard(imp) && !slices.Contains(allowed, imp) {
			out = append(out, fmt.Sprintf("%s imports %s: only the standard library and %v are allowed", rel, imp, allowed))
		}
	}
	for _, d := range p.Deps {
		if !g.standard(d) && !ok2[d] {
			out = append(out, fmt.Sprintf("%s depends on %s, which neither the standard library nor %v brings", rel, d, allowed))
		}
	}
	return out
}

func goList(t testing.TB) *graph {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	modOut, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Standard,Imports,Deps,Error", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g, err := parseList(strings.TrimSpace(string(modOut)), out)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// parseList reads the stream of JSON objects that `go list -json` prints.
func parseList(module string, data []byte) (*graph, error) {
	g := &graph{module: module, pkgs: map[string]*pkg{}}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		g.pkgs[p.ImportPath] = p
	}
	return g, nil
}

func TestImportRules(t *testing.T) {
	g := goList(t)
	// Guard against an empty or partial listing passing by default.
	for _, want := range []string{"internal/spool", "internal/queue", "internal/deliver", "internal/smtpserver", "internal/config", "cmd/posthorn"} {
		if _, ok := g.pkgs[g.module+"/"+want]; !ok {
			t.Fatalf("go list did not report %s", want)
		}
	}
	for _, p := range g.ownPackages() {
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
	}
	for _, v := range g.violations() {
		t.Error(v)
	}
}

// TestRulesCatchViolations feeds the checker a made-up module that breaks
// every rule once, so that a checker that lets things through fails here.
func TestRulesCatchViolations(t *testing.T) {
	const m = "example.test/mta"
	std := func(path string) *pkg { return &pkg{ImportPath: path, Standard: true} }
	// own is a package of the module; deps are its indirect dependencies.
	own := func(rel string, imports []string, deps ...string) *pkg {
		all := append(slices.Clone(imports), deps...)
		slices.Sort(all)
		return &pkg{ImportPath: m + "/" + rel, Imports: imports, Deps: slices.Compact(all)}
	}
	x := func(rel string) string { return m + "/" + rel }
	pkgs := []*pkg{
		std("fmt"), std("io"), std("net"),
		{ImportPath: "golang.org/x/net/idna", Imports: []string{"golang.org/x/text/unicode/bidi"}, Deps: []string{"golang.org/x/text/unicode/bidi"}},
		{ImportPath: "golang.org/x/text/unicode/bidi"},
		{ImportPath: "github.com/other/lib"},
		// Clean packages.
		own("internal/address", []string{"fmt", "golang.org/x/net/idna"}, "golang.org/x/text/unicode/bidi"),
		own("internal/envelope", []string{"fmt"}),
		own("internal/config", []string{"fmt"}),
		own("internal/queue", []string{x("internal/spool"), x("internal/deliver")}),
		own("cmd/mta", []string{x("internal/config"), x("internal/spool"), x("internal/deliver/maildir")}),
		// Violations of every rule, and a few clean packages among them.
		own("internal/spool", []string{x("internal/envelope")}, x("internal/policy")),               // transitive pipeline dep
		own("internal/deliver", []string{x("internal/queue")}),                                      // pipeline import
		own("internal/deliver/maildir", []string{x("internal/deliver")}, x("internal/queue")),       // via deliver
		own("internal/dsn", []string{x("internal/smtpserver")}),                                     // pipeline import
		own("internal/relay", []string{x("internal/spool"), x("internal/deliver/maildir")}),         // joins both
		own("internal/smtpserver", []string{x("internal/envelope")}, x("internal/spool")),           // spool via a dep
		own("internal/policy", []string{x("internal/config")}),                                      // config outside cmd
		own("internal/smtp", []string{"io", x("internal/envelope")}),                                // not address
		own("internal/smtp/sub", []string{"io"}, "github.com/other/lib"),                            // clean: the leaf rule is for internal/smtp itself
		own("internal/unused", []string{"io"}),                                                      // clean
		own("internal/smtpserver/tls", []string{x("internal/config")}, x("internal/config")),        // two rules
		own("internal/deliver/remote", []string{"net"}, "github.com/other/lib", x("internal/smtp")), // clean
	}
	g := &graph{module: m, pkgs: map[string]*pkg{}}
	for _, p := range pkgs {
		g.pkgs[p.ImportPath] = p
	}
	got := strings.Join(g.violations(), "\n")
	for _, want := range []string{
		"internal/spool depends on pipeline packages [internal/policy]",
		"internal/deliver depends on pipeline packages [internal/queue]",
		"internal/deliver/maildir depends on pipeline packages [internal/queue]",
		"internal/dsn depends on pipeline packages [internal/smtpserver]",
		"internal/relay imports both",
		"internal/smtpserver depends on [internal/spool]",
		"internal/policy imports [internal/config]: only cmd/... may",
		"internal/smtpserver/tls depends on [internal/config]",
		"internal/smtpserver/tls imports [internal/config]",
		"internal/smtp imports " + m + "/internal/envelope",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("violation not reported: %q\nreported:\n%s", want, got)
		}
	}
	for _, line := range g.violations() {
		for _, clean := range []string{"cmd/mta", "internal/queue", "internal/address", "internal/deliver/remote", "internal/unused", "internal/envelope", "internal/config", "internal/smtp/sub"} {
			if strings.HasPrefix(line, clean+" ") {
				t.Errorf("%s reported although it breaks no rule: %s", clean, line)
			}
		}
	}

	// A leaf that pulls in an outside module is caught, and one whose only
	// outside dependencies come with the allowed package is not.
	g.pkgs[x("internal/address")].Deps = append(g.pkgs[x("internal/address")].Deps, "github.com/other/lib")
	if v := strings.Join(g.leaf("internal/address", "golang.org/x/net/idna"), "\n"); !strings.Contains(v, "github.com/other/lib") {
		t.Errorf("address depending on github.com/other/lib not reported: %q", v)
	}
}
