package backend

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/backend/vulndb"
	"github.com/harrier-sec/harrier/internal/httpsserve"
	"github.com/harrier-sec/harrier/transport"
)

// Service is a running backend: store, QUIC ingest and HTTP API.
type Service struct {
	cfg    Config
	log    *slog.Logger
	store  *BadgerStore
	ingest *transport.Server
	http   *http.Server
	api    net.Listener
	// identity holds revocations and, with the CA key, signs agents'
	// certificates.
	identity *Identity
	// exports sends alerts (and the other record kinds each asks for) on to the configured destinations, and prunes the ingest orders behind them.
	exports *export.Manager
	// replica, when set, fills the store from the cluster's streams.
	replica *replicaSet
	// readyAfter, when set, holds /readyz at 503 until it is closed (see
	// ReadyAfter).
	readyAfter <-chan struct{}
}

// NewService opens the store and binds both listeners, so that a caller
// knows the backend is reachable once it returns.
func NewService(cfg Config, log *slog.Logger) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token, err := EnsureToken(cfg.TokenDir, cfg.Token, log)
	if err != nil {
		return nil, err
	}
	responseToken, err := EnsureResponseToken(cfg.ResponseTokenPath(), log)
	if err != nil {
		// Everything but changing response policies and asking for actions
		// works without it.
		log.Error("no response token: response policies and commands are refused until there is one", "path", cfg.ResponseTokenPath(), "error", err)
		responseToken = ""
	}
	var oidcLogin *OIDCLogin
	if cfg.OIDC != nil {
		// Bad configuration stops the start; an unreachable provider does
		// not (local users sign in, discovery retries).
		if oidcLogin, err = NewOIDCLogin(*cfg.OIDC, log); err != nil {
			return nil, err
		}
	}
	metrics := NewMetrics()
	vulns := NewImageVulnChecker(cfg.VulnDB.Dir, vulndb.ParseSeverity(cfg.VulnDB.MinSeverity), log)
	st, err := OpenBadgerStoreConfig(BadgerConfig{Dir: cfg.DataDir, MaxEvents: cfg.MaxEvents,
		MaxPendingInventoryBytes: cfg.MaxPendingInventoryBytes, Metrics: metrics, Evaluator: vulns}, log)
	if err != nil {
		return nil, err
	}
	tlsConf, err := transport.ServerTLS(cfg.CertFile, cfg.KeyFile, cfg.CAFile)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("ingest TLS (make certificates with `harrier certs`, or set backend.caFile/certFile/keyFile): %w", err), st.Close())
	}
	identity, err := newIdentity(cfg, st, log)
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	// Commands to agents are signed with the backend's serving key (re-read
	// when the files change): agents check them against their CA.
	serving, err := httpsserve.LoadCertFiles(cfg.CertFile, cfg.KeyFile, log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("command signing: %w", err), st.Close())
	}
	control := NewResponseControl(st, func() (*tls.Certificate, error) { return serving.GetCertificate(nil) }, log)
	var sink transport.Sink = NewSink(st)
	var replica *replicaSet
	if cfg.Cluster != nil {
		// A replica: agents' batches go to the streams, acknowledged once
		// they have them; the store is filled from the streams.
		if replica, err = startReplica(*cfg.Cluster, st, control, identity, log); err != nil {
			return nil, errors.Join(err, st.Close())
		}
		sink = replica.pub
		registerReplicaMetrics(metrics.Registerer(), replica)
	}
	ingest, err := transport.NewServer(transport.ServerConfig{Addr: cfg.IngestAddr, TLS: tlsConf, Authorize: identity.Authorize,
		Control: control}, sink, log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("ingest: %w", err), replica.close(), st.Close())
	}
	control.SetNotify(ingest.NotifyControl)
	identity.OnRevoke(func(agentID string) {
		if n := ingest.Disconnect(agentID, "agent "+agentID+" is revoked"); n > 0 {
			log.Info("revoked agent disconnected", "agent", agentID, "connections", n)
		}
	})
	var apiTLS *tls.Config
	if cfg.APITLS {
		if apiTLS, err = newAPITLS(cfg, log); err != nil {
			return nil, errors.Join(err, ingest.Close(), st.Close())
		}
	}
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("API listen: %w", err), ingest.Close(), st.Close())
	}
	exports, err := export.New(cfg.Exports, st, st.ExportKV(), export.Options{Log: log, Registerer: metrics.Registerer()})
	if err != nil {
		return nil, errors.Join(err, ln.Close(), ingest.Close(), st.Close())
	}
	s := &Service{cfg: cfg, log: log, store: st, ingest: ingest, api: ln, identity: identity, exports: exports, replica: replica}
	s.http = &http.Server{
		Handler: NewAPI(st, APIConfig{Token: token, Metrics: metrics, Ready: s.ready, Identity: identity, Exports: exports,
			Control: control, ResponseToken: responseToken, OIDC: oidcLogin}, log),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         apiTLS,
	}
	return s, nil
}

// newIdentity loads revocations and, with backend.caKeyFile, the CA that
// signs enrolled agents' certificates.
func newIdentity(cfg Config, st *BadgerStore, log *slog.Logger) (*Identity, error) {
	icfg := IdentityConfig{Validity: cfg.Enroll.CertValidity.Std(), ServiceAccount: cfg.Enroll.ServiceAccount}
	if cfg.CAKeyFile != "" {
		var err error
		if icfg.CACert, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("enrollment CA certificate: %w", err)
		}
		if icfg.CAKey, err = os.ReadFile(cfg.CAKeyFile); err != nil {
			return nil, fmt.Errorf("enrollment CA key (backend.caKeyFile): %w", err)
		}
		// Sign once now, so that a key that does not match the CA is an
		// error at start, not at the first enrollment.
		csr, _, err := transport.NewAgentCSR("check")
		if err != nil {
			return nil, err
		}
		if _, err := transport.SignAgentCSR(icfg.CACert, icfg.CAKey, csr, "check", time.Minute); err != nil {
			return nil, fmt.Errorf("enrollment CA (backend.caFile, backend.caKeyFile): %w", err)
		}
		if icfg.ServiceAccount == "" {
			icfg.ServiceAccount = DefaultServiceAccount()
		}
		reviewer, off, err := LoadKubeTokenReviewer(cfg.Enroll.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("service-account enrollment (backend.enroll.kubeconfig): %w", err)
		}
		icfg.Reviewer, icfg.ReviewerOff = reviewer, off
		log.Info("enrollment on", "certValidity", icfg.Validity, "serviceAccount", icfg.ServiceAccount, "serviceAccountTokens", reviewer != nil)
	}
	return NewIdentity(st, icfg, log)
}

// newAPITLS serves the API with the backend's certificate (re-read when it
// changes) and accepts, without requiring, client certificates from the
// agents' CA: only renewal asks for one; everything else keeps its bearer
// token.
func newAPITLS(cfg Config, log *slog.Logger) (*tls.Config, error) {
	certFile, keyFile := cfg.CertFile, cfg.KeyFile
	if cfg.APICertFile != "" {
		certFile, keyFile = cfg.APICertFile, cfg.APIKeyFile
	}
	certs, err := httpsserve.LoadCertFiles(certFile, keyFile, log)
	if err != nil {
		return nil, fmt.Errorf("API TLS: %w", err)
	}
	pool, err := transport.LoadCAPool(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("API TLS: %w", err)
	}
	c := httpsserve.TLSConfig(certs.GetCertificate)
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.ClientCAs = pool
	return c, nil
}

// Identity is the backend's enrollment and revocation state.
func (s *Service) Identity() *Identity { return s.identity }

// ReadyAfter makes /readyz answer 503 until ready is closed: a process that
// embeds the backend is ready only when its other parts are. Call it before
// Run.
func (s *Service) ReadyAfter(ready <-chan struct{}) { s.readyAfter = ready }

func (s *Service) ready() error {
	if s.replica != nil {
		if err := s.replica.ready(); err != nil {
			return err
		}
	}
	if s.readyAfter == nil {
		return nil
	}
	select {
	case <-s.readyAfter:
		return nil
	default:
		return errors.New("starting: the rest of the process is not ready yet")
	}
}

// IngestAddr is where agents connect (resolved, also when configured as port 0).
func (s *Service) IngestAddr() net.Addr { return s.ingest.Addr() }

// APIAddr is where the API and UI listen.
func (s *Service) APIAddr() net.Addr { return s.api.Addr() }

// Run serves until ctx is done (or a listener fails), then stops ingest,
// shuts the API down and closes the store, in that order. Every goroutine it
// starts has returned when it does.
func (s *Service) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	ingestDone := make(chan struct{})
	g.Go(func() error {
		defer close(ingestDone)
		if err := s.ingest.Serve(ctx); err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		serve := s.http.Serve
		if s.http.TLSConfig != nil {
			serve = func(l net.Listener) error { return s.http.ServeTLS(l, "", "") }
		}
		if err := serve(s.api); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.exports.Run(ctx); err != nil {
			return fmt.Errorf("exports: %w", err)
		}
		return nil
	})
	if s.replica != nil {
		g.Go(func() error { return s.replica.records.Run(ctx) })
		g.Go(func() error { return s.replica.events.Run(ctx) })
	}
	g.Go(func() error {
		<-ctx.Done() // the caller's, or a failure of either server
		<-ingestDone
		shut, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		return s.http.Shutdown(shut)
	})
	scheme := "http"
	if s.http.TLSConfig != nil {
		scheme = "https"
	}
	s.log.Info("backend running", "api", scheme+"://"+s.api.Addr().String()+"/", "ingest", s.cfg.IngestAddr)
	return errors.Join(g.Wait(), s.replica.close(), s.store.Close())
}

// startReplica connects to the cluster's NATS servers and makes sure of
// the stream; when NATS is not reachable yet the backend starts anyway
// (its API serves what it has) and the stream is made once it is.
func startReplica(c replicate.Config, st *BadgerStore, control *ResponseControl, identity *Identity, log *slog.Logger) (*replicaSet, error) {
	c = c.WithDefaults()
	nc, err := replicate.Connect(c, "harrier-backend "+c.ReplicaName)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = replicate.EnsureStream(ctx, js, c)
	cancel()
	if err != nil {
		// The materializer makes it once NATS answers (Run).
		log.Error("cluster stream not ready; agents' batches are refused until it is", "servers", c.Servers, "error", err)
	}
	log.Info("backend replica", "replica", c.ReplicaName, "stream", c.Stream, "replicas", c.Replicas, "servers", c.Servers)
	pub, mat := replicate.NewPublisher(js, c, log), replicate.NewMaterializer(js, c, st, log)
	// Raw events come from their own stream, bounded in size and age.
	events := replicate.NewEventsMaterializer(js, c, st, log)
	// Response policies, commands and agents' answers go through the
	// stream too: whichever replica an agent is connected to has them; so
	// do enrollments, bootstrap tokens and revocations.
	mat.SetControl(func(ctx context.Context, seq uint64, change []byte) error {
		var env identityEnvelope
		if err := json.Unmarshal(change, &env); err != nil {
			return fmt.Errorf("control change: %w", err)
		}
		if len(env.Identity) > 0 {
			return identity.ApplyControl(seq, env.Identity)
		}
		return control.ApplyControl(ctx, seq, change)
	})
	control.SetReplicator(replicaControl{pub: pub, mat: mat})
	identity.SetReplicator(replicaControl{pub: pub, mat: mat})
	return &replicaSet{pub: pub, records: mat, events: events, nc: nc}, nil
}

// replicaSet is a replica's part of the cluster: its publisher, what
// applies the records' and the raw events' streams, and its connection.
type replicaSet struct {
	pub             *replicate.Publisher
	records, events *replicate.Materializer
	nc              *nats.Conn
}

// ready says whether both streams are applied (raw events too: the events
// API answers as the other replicas' only then).
func (r *replicaSet) ready() error {
	if err := r.records.Ready(); err != nil {
		return err
	}
	if err := r.events.Ready(); err != nil {
		return fmt.Errorf("raw events: %w", err)
	}
	return nil
}

func (r *replicaSet) close() error {
	if r != nil {
		r.nc.Close()
	}
	return nil
}

// registerReplicaMetrics exports how far the replica is into the stream
// and what it skipped.
func registerReplicaMetrics(reg prometheus.Registerer, r *replicaSet) {
	for stream, m := range map[string]*replicate.Materializer{"records": r.records, "events": r.events} {
		l := prometheus.Labels{"stream": stream}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "harrier_replica_stream_applied", ConstLabels: l,
				Help: "The last stream sequence this replica applied to its store."}, func() float64 { return float64(m.Applied()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "harrier_replica_stream_lag_messages", ConstLabels: l,
				Help: "Stream messages this replica has not applied yet (as of its last look)."}, func() float64 { return float64(m.Lag()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "harrier_replica_messages_skipped_total", ConstLabels: l,
				Help: "Stream messages skipped: not a batch (undecodable)."}, func() float64 { return float64(m.Undecodable()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "harrier_replica_messages_removed_total", ConstLabels: l,
				Help: "Stream messages removed by the stream's size or age limit before this replica applied them."},
				func() float64 { return float64(m.Removed()) }),
		)
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "harrier_replica_control_refused_total",
		Help: "Response control changes from the stream this replica refused (skipped)."}, func() float64 { return float64(r.records.Refused()) }))
}

// replicaControl carries the response control's changes through the
// cluster's stream.
type replicaControl struct {
	pub *replicate.Publisher
	mat *replicate.Materializer
}

// Replicate publishes change and waits until this replica has applied it.
func (r replicaControl) Replicate(ctx context.Context, change []byte) error {
	seq, err := r.pub.PublishControl(ctx, change)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return r.mat.WaitApplied(wctx, seq)
}
