package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/transport"
)

// apiFlags are how the CLI's API commands reach the backend: its URL, the
// API token (as `harrier simulate` reads it) and, for an HTTPS API
// (backend.apiTLS), the CA its certificate chains to.
type apiFlags struct {
	url, tokenFile, caFile string
	// defaultToken is the token file used without --token-file (the API
	// token's when empty).
	defaultToken string
}

func (f *apiFlags) register(cmd *cobra.Command) {
	defaults := backend.FileConfig{}.Resolved()
	cmd.PersistentFlags().StringVar(&f.url, "api", "http://127.0.0.1:9470", "backend API base URL (https:// when backend.apiTLS is on)")
	cmd.PersistentFlags().StringVar(&f.tokenFile, "token-file", "", "file holding the API token (default "+defaults.TokenFile()+")")
	cmd.PersistentFlags().StringVar(&f.caFile, "ca-file", "", "CA certificate of an https:// API (default "+defaults.CAFile+" when it exists)")
}

// do sends one request with the bearer token and decodes a JSON answer
// into out; a non-2xx answer is an error carrying the API's message.
func (f *apiFlags) do(ctx context.Context, method, path string, body, out any) error {
	u, err := url.Parse(strings.TrimSuffix(f.url, "/") + path)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("--api %q: want http(s)://host:port", f.url)
	}
	tokenFile := f.tokenFile
	if tokenFile == "" {
		tokenFile = f.defaultToken
	}
	if tokenFile == "" {
		tokenFile = backend.FileConfig{}.Resolved().TokenFile()
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("API token: %w (pass --token-file)", err)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	if u.Scheme == "https" {
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
		caFile := f.caFile
		if caFile == "" {
			def := backend.FileConfig{}.Resolved().CAFile
			if fileExists(def) {
				caFile = def
			}
		}
		if caFile != "" {
			if tlsConf.RootCAs, err = transport.LoadCAPool(caFile); err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
		}
		client.Transport = &http.Transport{TLSClientConfig: tlsConf}
	}
	var rd io.Reader
	contentType := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte: // a file sent as it is (a policy file)
		rd, contentType = bytes.NewReader(b), "application/yaml"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", contentType)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: answer: %w", method, path, err)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(filepath.Clean(p))
	return err == nil
}

func newTokensCommand() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Bootstrap tokens that let agents on plain Linux nodes enroll",
		Long: `A bootstrap token lets agents enroll (uplink.enroll.kind: bootstrap) with the backend, which must
have enrollment on (backend.caKeyFile, backend.apiTLS). The token is printed once; the backend keeps only its
hash, its expiry and its remaining uses. Each agent asks for its own ID (uplink.agentID, or its node name);
an ID whose certificate is still valid is refused until it is revoked.`,
	}
	f.register(cmd)
	var ttl time.Duration
	var uses int
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a bootstrap token and print it (once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Token   string    `json:"token"`
				Expires time.Time `json:"expires"`
				Uses    int       `json:"uses"`
			}
			if err := f.do(cmd.Context(), http.MethodPost, "/api/v1/tokens", map[string]any{"ttl": ttl.String(), "uses": uses}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "bootstrap token for %d enrollment(s), valid until %s; put it in the agent's uplink.enroll.tokenFile:\n",
				out.Uses, out.Expires.Local().Format(time.RFC3339))
			_, err := fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return err
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", backend.DefaultTokenTTL, "how long the token is valid (at most 720h)")
	create.Flags().IntVar(&uses, "uses", backend.DefaultTokenUses, "how many agents may enroll with it")
	cmd.AddCommand(create)
	return cmd
}

func newAgentsCommand() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List agents; revoke or unrevoke one",
		Long: `"agents revoke NODE" refuses an agent at once: its live connection is closed, its next handshake,
renewal and enrollment refused; it keeps spooling. "agents unrevoke NODE" accepts it again.`,
	}
	f.register(cmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the agents the backend knows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Agents []struct {
					AgentID    string    `json:"agent_id"`
					LastSeen   time.Time `json:"last_seen"`
					Records    uint64    `json:"records"`
					Revoked    bool      `json:"revoked"`
					Enrollment *struct {
						Kind     string    `json:"kind"`
						NotAfter time.Time `json:"not_after"`
					} `json:"enrollment"`
				} `json:"agents"`
			}
			if err := f.do(cmd.Context(), http.MethodGet, "/api/v1/agents", nil, &out); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "AGENT\tSTATE\tLAST SEEN\tRECORDS\tENROLLED\tCERT UNTIL")
			for _, a := range out.Agents {
				state, seen, kind, until := "ok", "-", "-", "-"
				if a.Revoked {
					state = "revoked"
				}
				if !a.LastSeen.IsZero() {
					seen = a.LastSeen.Local().Format(time.DateTime)
				}
				if e := a.Enrollment; e != nil {
					kind, until = e.Kind, e.NotAfter.Local().Format(time.DateTime)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", a.AgentID, state, seen, a.Records, kind, until)
			}
			return w.Flush()
		},
	}
	setRevoked := func(use, short, action string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NODE",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := transport.ValidAgentID(args[0]); err != nil {
					return err
				}
				if err := f.do(cmd.Context(), http.MethodPost, "/api/v1/agents/"+url.PathEscape(args[0])+"/"+action, nil, nil); err != nil {
					return err
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "agent %s %sd\n", args[0], action)
				return err
			},
		}
	}
	cmd.AddCommand(list,
		setRevoked("revoke", "Refuse an agent: close its connection, refuse its handshakes, renewals and enrollments", "revoke"),
		setRevoked("unrevoke", "Accept a revoked agent again", "unrevoke"))
	return cmd
}
