package cri

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Options configure a Client.
type Options struct {
	// Socket is the runtime's socket, a path or unix:///path; "" detects
	// one of DefaultSockets (and keeps looking while none exists).
	Socket string
	// Logf receives the client's few log lines: the runtime found, lost
	// (once per outage) and back. nil: no logging.
	Logf func(format string, args ...any)
	// Refresh is how often the whole cache is synced with the runtime
	// (pods that are gone are dropped); default 5s.
	Refresh time.Duration
	// Timeout bounds each call to the runtime; default 2s.
	Timeout time.Duration
	// MaxBackoff bounds the wait between reconnection attempts; default 2s.
	MaxBackoff time.Duration
}

// Status is the client's view of the runtime.
type Status struct {
	Connected      bool
	Socket         string
	RuntimeName    string
	RuntimeVersion string
	PodsKnown      int
	// LastError is the error that ended the last connection, or why there
	// is none yet; "" once connected.
	LastError string
	// Since is when Connected last changed.
	Since time.Time
}

// Client resolves pod identities with the node's container runtime. All
// methods are safe for concurrent use. Close it when done.
type Client struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}

	mu     sync.Mutex
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	status Status
	gen    uint64
	// outage is set once an outage (or the first failure to connect) has
	// been logged, so it is logged once.
	outage bool
	pods   map[string]*podEntry // by pod UID
	owner  map[string]string    // container or sandbox id → pod UID
}

// New returns a client and starts connecting in the background. It fails
// only on a malformed Options.Socket: with no runtime reachable, the client
// keeps trying, Status says why, and Lookup returns ErrUnavailable, so the
// caller can start and enforce everything that needs no pod identity.
func New(ctx context.Context, o Options) (*Client, error) {
	if o.Socket != "" {
		p, err := socketPath(o.Socket)
		if err != nil {
			return nil, err
		}
		o.Socket = p
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	o.Refresh = cmpOr(o.Refresh, 5*time.Second)
	o.Timeout = cmpOr(o.Timeout, 2*time.Second)
	o.MaxBackoff = cmpOr(o.MaxBackoff, 2*time.Second)
	ctx, cancel := context.WithCancel(ctx)
	c := &Client{
		opts: o, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), kick: make(chan struct{}, 1),
		pods: map[string]*podEntry{}, owner: map[string]string{},
	}
	c.status.Socket = o.Socket
	c.status.LastError = "not connected yet"
	c.status.Since = time.Now()
	go c.run(ctx)
	return c, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Close stops the background work and closes the connection; idempotent.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.rt = nil, nil
	return err
}

// Status returns the runtime connection's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.PodsKnown = len(c.pods)
	return s
}

// run keeps the client connected and the cache synced: a full sync every
// Refresh while the runtime answers, retries with doubling backoff while it
// does not, and an early sync when a lookup saw the runtime fail.
func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	wait := time.Duration(0)
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-time.After(wait):
		}
		if err := c.sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setDown(err)
			wait, backoff = backoff, min(2*backoff, c.opts.MaxBackoff)
			continue
		}
		wait, backoff = c.opts.Refresh, 50*time.Millisecond
	}
}

// client returns the runtime client, dialling (lazily: gRPC connects on
// the first call and reconnects by itself) once a socket is known.
func (c *Client) client() (runtimeapi.RuntimeServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rt != nil {
		return c.rt, nil
	}
	sock := c.opts.Socket
	if sock == "" {
		var err error
		if sock, err = Detect(); err != nil {
			return nil, err
		}
	}
	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxDelay: c.opts.MaxBackoff},
			MinConnectTimeout: c.opts.Timeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("cri: dial %s: %w", sock, err)
	}
	c.conn, c.rt, c.status.Socket = conn, runtimeapi.NewRuntimeServiceClient(conn), sock
	go c.watch(conn)
	return c.rt, nil
}

// watch has the loop sync at once when the connection leaves READY (the
// runtime closed it: it stopped or restarted), so an outage shows in
// Status without waiting for the next refresh or lookup.
func (c *Client) watch(conn *grpc.ClientConn) {
	for {
		st := conn.GetState()
		if !conn.WaitForStateChange(c.ctx, st) {
			return
		}
		if st == connectivity.Ready {
			c.nudge()
		}
	}
}

// setDown records an outage; only the first failure of an outage is
// logged (outside the lock: Logf may do anything, even call Status).
func (c *Client) setDown(err error) {
	c.mu.Lock()
	if c.status.Connected {
		c.status.Since = time.Now()
	}
	c.status.Connected, c.status.LastError = false, err.Error()
	first := !c.outage
	c.outage = true
	sock, known := c.status.Socket, len(c.pods)
	c.mu.Unlock()
	if !first {
		return
	}
	if sock == "" {
		c.opts.Logf("cri: no container runtime: %v; pods are unresolved until one answers", err)
		return
	}
	c.opts.Logf("cri: container runtime at %s unreachable: %v; keeping %d known pod identities, new pods are unresolved until it is back", sock, err, known)
}

// setUp records a working connection; logged once at first and once per
// outage.
func (c *Client) setUp(v *runtimeapi.VersionResponse) {
	c.mu.Lock()
	if !c.status.Connected {
		c.status.Since = time.Now()
	}
	news := c.outage || c.status.RuntimeName == ""
	c.outage = false
	c.status.Connected, c.status.LastError = true, ""
	c.status.RuntimeName, c.status.RuntimeVersion = v.GetRuntimeName(), v.GetRuntimeVersion()
	sock := c.status.Socket
	c.mu.Unlock()
	if news {
		c.opts.Logf("cri: connected to %s %s at %s", v.GetRuntimeName(), v.GetRuntimeVersion(), sock)
	}
}

// sync asks the runtime for every sandbox and container and replaces the
// cache with that view. A pod resolved by a lookup after the sync started
// is kept even if the listing missed it.
func (c *Client) sync(ctx context.Context) error {
	rt, err := c.client()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	v, err := rt.Version(cctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("cri: version: %w", err)
	}
	c.setUp(v)
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	sbs, err := rt.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("cri: list pod sandboxes: %w", err)
	}
	cs, err := rt.ListContainers(cctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("cri: list containers: %w", err)
	}
	c.replace(gen, sbs.GetItems(), cs.GetContainers())
	return nil
}

func (c *Client) replace(gen uint64, sbs []*runtimeapi.PodSandbox, cs []*runtimeapi.Container) {
	uids := map[string]bool{}
	for _, sb := range sbs {
		uids[sb.GetMetadata().GetUid()] = true
	}
	fresh := map[string]*podEntry{}
	for uid := range uids {
		if e := buildPod(uid, sbs, cs); e != nil {
			e.refreshed = gen
			fresh[uid] = e
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for uid, e := range c.pods {
		if _, ok := fresh[uid]; !ok && e.refreshed >= gen {
			fresh[uid] = e // resolved by a lookup while the listing ran
		}
	}
	c.pods = fresh
	c.reindex()
}

func (c *Client) reindex() {
	c.owner = map[string]string{}
	for uid, e := range c.pods {
		for _, id := range e.sandboxes {
			c.owner[id] = uid
		}
		for id := range e.containers {
			c.owner[id] = uid
		}
	}
}

// nudge asks the background loop for an early sync.
func (c *Client) nudge() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}
