package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/pxresp/pxresp/internal/status"
)

const statusUsage = `Usage: pxresp status [--addr URL] [--ca-file FILE] [--json]

Asks a running pxresp what it sees: its datapath and why, every interface
of its network namespace, attached or skipped and why, its rule, datapath
and counters, and the sysctl problems. pxresp must run with --metrics-addr; with basic auth
(--web.config.file), put the user in the URL: https://USER:PASSWORD@HOST:PORT.

Flags:
`

// statusFlags are `pxresp status`'s flags, on fs.
type statusFlags struct {
	addr, caFile string
	json         bool
}

func (f *statusFlags) define(fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "http://127.0.0.1:9597", "`URL` of pxresp's --metrics-addr listener")
	fs.StringVar(&f.caFile, "ca-file", "", "verify the server's TLS certificate with the CA certificates in this PEM `file`")
	fs.BoolVar(&f.json, "json", false, "print the JSON as pxresp serves it instead of a table")
	fs.VisitAll(func(fl *pflag.Flag) { fl.Usage += " [$" + statusEnvName(fl.Name) + "]" })
}

// statusEnvName is the environment variable of a status flag: --addr is
// PXRESP_STATUS_ADDR.
func statusEnvName(flagName string) string { return envName("status-" + flagName) }

// statusCmd is `pxresp status`: exit 0 with the table, 1 if pxresp cannot be
// asked, 2 for bad usage.
func statusCmd(args []string, env map[string]string, stdout, stderr io.Writer) int {
	var f statusFlags
	fs := newFlagSet("pxresp status")
	f.define(fs)
	err := fs.Parse(args)
	if err != nil {
		err = parseError(fs, err)
	}
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, statusUsage+fs.FlagUsages())
		return 0
	}
	if err == nil && fs.NArg() > 0 {
		err = usagef("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if err == nil {
		err = setFromEnv(fs, env, statusEnvName)
	}
	var c *http.Client
	if err == nil {
		c, err = f.client()
	}
	if err != nil {
		fmt.Fprintf(stderr, "pxresp status: %v\n", err)
		return 2
	}
	body, err := fetchStatus(c, f.addr)
	if err != nil {
		fmt.Fprintf(stderr, "pxresp status: %v\n", err)
		return 1
	}
	if f.json {
		_, _ = stdout.Write(body)
		return 0
	}
	var s status.Status
	if err := json.Unmarshal(body, &s); err != nil {
		fmt.Fprintf(stderr, "pxresp status: %s: %v\n", f.addr, err)
		return 1
	}
	if err := status.Write(stdout, &s); err != nil {
		fmt.Fprintf(stderr, "pxresp status: %v\n", err)
		return 1
	}
	return 0
}

// client checks --addr and returns the HTTP client for it.
func (f *statusFlags) client() (*http.Client, error) {
	u, err := url.Parse(f.addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("invalid value %q for flag --addr: want a URL such as http://127.0.0.1:9597", f.addr)
	}
	if err := checkHostPort(u.Host); err != nil && u.Port() != "" {
		return nil, usagef("invalid value %q for flag --addr: %v", f.addr, err)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, usagef("--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--ca-file: %s: no PEM certificate", f.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}, nil
}

// fetchStatus GETs the status endpoint under base.
func fetchStatus(c *http.Client, base string) ([]byte, error) {
	u := strings.TrimSuffix(base, "/") + status.Path
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redact(u), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", redact(u), resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// redact hides a URL's password.
func redact(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return u
}
