package main

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/backend"
)

// newUsersCommand manages the console's users through the running
// backend's API (with the API token, the break-glass admin): the store is
// the backend's, and in a replicated backend the change reaches every
// replica.
func newUsersCommand() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Users of the web console and the API: add, list, change a role, remove, make an API token",
		Long: `Users sign in to the web console with a name and password, or call the API with a token of
their own ("harrier backend users token NAME"). Roles, each allowed what the ones before it are:
  viewer     reads alerts, findings, inventory, exports, triage
  analyst    also changes triage: state, assignee, comments
  responder  also asks agents for response actions
  admin      also manages users, bootstrap tokens, revocations, response policies; reads the audit log
These commands talk to the running backend with its API token (--token-file).`,
	}
	f.register(cmd)
	var role, passwordFile string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user; without --password-file a password is made and printed once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := backend.ParseRole(role)
			if err != nil {
				return err
			}
			password, made := "", false
			switch passwordFile {
			case "":
				password, made = rand.Text(), true // 26 base32 characters: 130 bits
			case "-":
				password, err = readLine(cmd.InOrStdin())
			default:
				var b []byte
				b, err = os.ReadFile(passwordFile)
				password = strings.TrimRight(string(b), "\r\n")
			}
			if err != nil {
				return fmt.Errorf("--password-file: %w", err)
			}
			var out struct{ User backend.UserView }
			if err := f.do(cmd.Context(), http.MethodPost, "/api/v1/users", backend.AddUserRequest{Name: args[0], Role: r, Password: password}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s added with the role %s\n", out.User.Name, out.User.Role)
			if made {
				fmt.Fprintf(cmd.OutOrStdout(), "password (shown once): %s\n", password)
			}
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", "viewer", "viewer, analyst, responder or admin")
	add.Flags().StringVar(&passwordFile, "password-file", "", `file holding the password (12 to 72 bytes; "-": one line from stdin)`)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct{ Users []backend.UserView }
			if err := f.do(cmd.Context(), http.MethodGet, "/api/v1/users", nil, &out); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "USER\tROLE\tPASSWORD\tTOKENS\tCREATED\tBY")
			for _, u := range out.Users {
				pw, tokens := "no", "-"
				if u.HasPassword {
					pw = "yes"
				}
				if len(u.Tokens) > 0 {
					tokens = strings.Join(u.Tokens, ",")
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, pw, tokens, u.Created.Local().Format(time.DateTime), u.CreatedBy)
			}
			return w.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a user: their sessions and tokens stop working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.do(cmd.Context(), http.MethodDelete, "/api/v1/users/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "user %s removed\n", args[0])
			return err
		},
	}
	token := &cobra.Command{
		Use:   "token NAME",
		Short: "Make an API token for a user (printed once; it acts with the user's role)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct{ ID, Token string }
			if err := f.do(cmd.Context(), http.MethodPost, "/api/v1/users/"+url.PathEscape(args[0])+"/tokens", nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "API token %s for %s (shown once; send it as Authorization: Bearer):\n", out.ID, args[0])
			_, err := fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return err
		},
	}
	var newRole string
	setRole := &cobra.Command{
		Use:   "role NAME --role ROLE",
		Short: "Change a user's role: their sessions and tokens have it at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := backend.ParseRole(newRole)
			if err != nil {
				return err
			}
			var out struct{ User backend.UserView }
			if err := f.do(cmd.Context(), http.MethodPut, "/api/v1/users/"+url.PathEscape(args[0])+"/role", backend.SetRoleRequest{Role: r}, &out); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "user %s now has the role %s\n", out.User.Name, out.User.Role)
			return err
		},
	}
	setRole.Flags().StringVar(&newRole, "role", "", "viewer, analyst, responder or admin")
	_ = setRole.MarkFlagRequired("role")
	cmd.AddCommand(add, list, remove, token, setRole)
	return cmd
}

func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
