// Package scrape reads pxresp's Prometheus endpoints in tests: it fetches
// a URL and parses the text exposition strictly, by series.
package scrape

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Exposition is a parsed Prometheus text Exposition: every sample by its
// series (see Series), and every metric family's TYPE.
type Exposition struct {
	Values map[string]float64
	Types  map[string]string
}

// Series is the canonical key of a sample: name{k="v",...} with the labels
// sorted by name, or the bare name without labels.
func Series(name string, kv ...string) string {
	if len(kv) == 0 {
		return name
	}
	pairs := make([]string, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, kv[i]+"="+strconv.Quote(kv[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// Parse parses the text format (version 0.0.4), strictly enough
// for pxresp's output: it fails on any line it does not understand.
func Parse(t testing.TB, body string) Exposition {
	t.Helper()
	e := Exposition{Values: map[string]float64{}, Types: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == "TYPE" {
				e.Types[f[2]] = f[3]
			}
			continue
		}
		key, value, err := parseSample(line)
		if err != nil {
			t.Fatalf("Exposition line %d %q: %v", n, line, err)
		}
		if _, dup := e.Values[key]; dup {
			t.Fatalf("Exposition line %d: series %s twice", n, key)
		}
		e.Values[key] = value
	}
	return e
}

func parseSample(line string) (key string, value float64, err error) {
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", 0, fmt.Errorf("no metric name")
	}
	name, rest := line[:i], line[i:]
	var kv []string
	if rest[0] == '{' {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				return "", 0, fmt.Errorf("bad label at %q", rest)
			}
			lname := rest[:eq]
			rest = rest[eq+1:]
			// The value is a Go-compatible quoted string (\\, \", \n).
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return "", 0, fmt.Errorf("bad label value at %q: %v", rest, err)
			}
			v, _ := strconv.Unquote(q)
			kv = append(kv, lname, v)
			rest = strings.TrimPrefix(rest[len(q):], ",")
		}
		rest = rest[1:]
	}
	f := strings.Fields(rest)
	if len(f) != 1 { // no timestamps expected
		return "", 0, fmt.Errorf("want one value after the series, got %q", rest)
	}
	value, err = strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", 0, err
	}
	return Series(name, kv...), value, nil
}

// Get returns a sample's value and fails if the series is missing.
func (e Exposition) Get(t testing.TB, name string, kv ...string) float64 {
	t.Helper()
	k := Series(name, kv...)
	v, ok := e.Values[k]
	if !ok {
		t.Errorf("series %s missing", k)
	}
	return v
}

// Names returns the series keys whose metric name starts with prefix.
func (e Exposition) Names(prefix string) []string {
	var ks []string
	for k := range e.Values {
		if strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

// Fetch GETs url and returns the status, body and content type.
func Fetch(t testing.TB, c *http.Client, url string) (int, string, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("Content-Type")
}

// Metrics GETs url (a /metrics endpoint) and parses it.
func Metrics(t testing.TB, c *http.Client, url string) (Exposition, string) {
	t.Helper()
	code, body, ctype := Fetch(t, c, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, code, body)
	}
	if !strings.HasPrefix(ctype, "text/plain; version=0.0.4") {
		t.Errorf("GET %s: Content-Type %q, want the text format 0.0.4", url, ctype)
	}
	return Parse(t, body), body
}
