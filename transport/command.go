package transport

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// ErrCommandRefused is wrapped by every reason VerifyCommand refuses a
// command for.
var ErrCommandRefused = errors.New("command refused")

// commandClockSkew tolerates an agent's clock behind or ahead of the
// backend's when checking a command's validity window.
const commandClockSkew = 2 * time.Minute

// SignCommand marshals cmd and signs it with key, the private key of the
// first certificate of chain (the backend's serving certificate).
func SignCommand(cmd *api.Command, key crypto.Signer, chain [][]byte) (*api.SignedCommand, error) {
	if len(chain) == 0 {
		return nil, errors.New("sign command: no signer certificate")
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("sign command: %w", err)
	}
	digest := sha256.Sum256(raw)
	// ECDSA and RSA (PKCS #1 v1.5) sign the SHA-256 digest, Ed25519 the
	// message itself; the verifier picks the algorithm from the key.
	msg, opts := digest[:], crypto.SignerOpts(crypto.SHA256)
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		msg, opts = raw, crypto.Hash(0)
	}
	sig, err := key.Sign(rand.Reader, msg, opts)
	if err != nil {
		return nil, fmt.Errorf("sign command: %w", err)
	}
	return &api.SignedCommand{Command: raw, Signature: sig, SignerChain: chain}, nil
}

// VerifyCommand returns the command sc carries when its signer's
// certificate chains to roots with server-auth usage, the signature is the
// signer's, it is addressed to agentID and now is within its validity
// window. Every refusal wraps ErrCommandRefused and says why.
func VerifyCommand(sc *api.SignedCommand, roots *x509.CertPool, agentID string, now time.Time) (*api.Command, error) {
	chain := sc.GetSignerChain()
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no signer certificate", ErrCommandRefused)
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: signer certificate %d: %w", ErrCommandRefused, i, err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("%w: signer is not this site's backend: %w", ErrCommandRefused, err)
	}
	if err := certs[0].CheckSignature(signatureAlgorithm(certs[0]), sc.GetCommand(), sc.GetSignature()); err != nil {
		return nil, fmt.Errorf("%w: bad signature: %w", ErrCommandRefused, err)
	}
	cmd := new(api.Command)
	if err := proto.Unmarshal(sc.GetCommand(), cmd); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCommandRefused, err)
	}
	switch {
	case cmd.GetId() == "":
		return nil, fmt.Errorf("%w: no command ID", ErrCommandRefused)
	case cmd.GetAgentId() != agentID:
		return nil, fmt.Errorf("%w: addressed to agent %q, not this one", ErrCommandRefused, cmd.GetAgentId())
	case cmd.GetExpires() == nil || now.After(cmd.GetExpires().AsTime().Add(commandClockSkew)):
		return cmd, fmt.Errorf("%w: expired at %s", ErrCommandRefused, cmd.GetExpires().AsTime().Format(time.RFC3339))
	case cmd.GetIssued() == nil || cmd.GetIssued().AsTime().After(now.Add(commandClockSkew)):
		return cmd, fmt.Errorf("%w: issued in the future (%s): check the clocks", ErrCommandRefused, cmd.GetIssued().AsTime().Format(time.RFC3339))
	}
	return cmd, nil
}

// signatureAlgorithm is the SHA-256 algorithm for c's key type.
func signatureAlgorithm(c *x509.Certificate) x509.SignatureAlgorithm {
	switch c.PublicKeyAlgorithm {
	case x509.RSA:
		return x509.SHA256WithRSA
	case x509.Ed25519:
		return x509.PureEd25519
	default:
		return x509.ECDSAWithSHA256
	}
}
