// Package fleet keeps many lbd nodes in step through etcd: the fleet's
// desired state is one etcd key (so that a change of any size is one
// atomic write), every node watches it, writes are transactions guarded
// by the revision they read, and every node reports what it runs under a
// lease. It holds no HTTP and no datapath: the daemon wires it to the
// controller.
package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config is how a node reaches its fleet (the serve flags).
type Config struct {
	Endpoints   []string
	Fleet       string
	Node        string
	DialTimeout time.Duration
	// RequestTimeout bounds each etcd request.
	RequestTimeout time.Duration
	// ReportTTL is the lease of the node's report: a node silent that
	// long leaves the fleet's status.
	ReportTTL time.Duration
	// Log receives what the node cannot apply (nil: discarded).
	Log *slog.Logger
	// ConflictRetry bounds how long a write retries when another writer
	// changed the desired state between its read and its transaction.
	ConflictRetry time.Duration
	// RetryFor bounds how long a request is tried again after it failed
	// on the way (default 3 × RequestTimeout): long enough to outlast
	// an etcd leader election.
	RetryFor time.Duration
}

// ErrConflict is a write that kept losing to concurrent writers for
// Config.ConflictRetry (the API answers 409).
var ErrConflict = errors.New("the fleet's desired state kept changing under this write; retry")

// ErrStale is a write guarded by a revision that is no longer the fleet's
// (If-Match mismatch; the API answers 412).
var ErrStale = errors.New("the fleet's desired state changed since it was read")

// Store is one node's connection to its fleet in etcd.
type Store struct {
	cfg Config
	cli *clientv3.Client
}

// Open connects to etcd. It does not wait for the cluster: a node cut
// off at start keeps its local state.
func Open(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("--etcd-endpoints is empty: give the etcd members' client URLs")
	}
	if cfg.Fleet == "" || strings.Contains(cfg.Fleet, "/") {
		return nil, fmt.Errorf("fleet name %q: give a non-empty name without '/'", cfg.Fleet)
	}
	if cfg.Node == "" || strings.Contains(cfg.Node, "/") {
		return nil, fmt.Errorf("node name %q: give a non-empty name without '/'", cfg.Node)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	if cfg.ReportTTL <= 0 {
		cfg.ReportTTL = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConflictRetry <= 0 {
		cfg.ConflictRetry = 2 * time.Second
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 3 * cfg.RequestTimeout
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: cfg.DialTimeout,
		// gRPC waits up to 120 s between reconnects by default, so a node
		// healed after a long partition would stay cut off (stale,
		// withdrawn) for up to two minutes more. A second at most.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return &Store{cfg: cfg, cli: cli}, nil
}

func (s *Store) log(msg string, args ...any) { s.cfg.Log.Warn(msg, args...) }

// Close ends the connection.
func (s *Store) Close() error { return s.cli.Close() }

// Node is this node's name in the fleet.
func (s *Store) Node() string { return s.cfg.Node }

func (s *Store) prefix() string { return "/lbd/fleets/" + s.cfg.Fleet + "/" }

// DesiredKey is the etcd key holding the fleet's whole desired state.
func (s *Store) DesiredKey() string { return s.prefix() + "desired" }

func (s *Store) nodesPrefix() string { return s.prefix() + "nodes/" }

// Desired is the fleet's desired state at a revision (the key's mod
// revision; 0 when the fleet has none yet).
type Desired struct {
	VIPs     map[lb.VIPKey]*control.VIP
	Revision int64
}

// retry runs op, each attempt bounded by RequestTimeout, and again after
// a failure, until RetryFor has passed since the start: a request that
// meets an etcd leader election (the leader died: the others wait up to
// two election timeouts before they elect one) or a member going away
// outlasts one attempt but not the election. Errors that etcd answers
// with (not a lost or timed-out request) are not retried. The last
// error is returned.
func (s *Store) retry(ctx context.Context, op func(ctx context.Context) error) error {
	deadline := time.Now().Add(s.cfg.RetryFor)
	for {
		actx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		err := op(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

// transient tells whether an etcd request failed on the way (no member
// reachable, no leader, timed out) rather than being refused.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrLeaderChanged) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost)
}

// Get reads the fleet's desired state, in one request (a status that
// fails fast; the watch retries on its own).
func (s *Store) Get(ctx context.Context) (Desired, error) { return s.get(ctx, false) }

// get reads the desired state; with retry, through an election (a write
// that must not fail while etcd elects a leader).
func (s *Store) get(ctx context.Context, retry bool) (Desired, error) {
	var resp *clientv3.GetResponse
	read := func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.DesiredKey())
		return err
	}
	var err error
	if retry {
		err = s.retry(ctx, read)
	} else {
		actx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		err = read(actx)
		cancel()
	}
	if err != nil {
		return Desired{}, fmt.Errorf("read %s from etcd: %w", s.DesiredKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return Desired{VIPs: map[lb.VIPKey]*control.VIP{}}, nil
	}
	kv := resp.Kvs[0]
	vips, err := control.DecodeState(kv.Value, "etcd key "+s.DesiredKey())
	if err != nil {
		return Desired{}, err
	}
	return Desired{VIPs: vips, Revision: kv.ModRevision}, nil
}

// Update changes the fleet's desired state: it reads the state, lets
// change compute the next one, and writes it in a transaction that
// succeeds only if nobody wrote in between. On a lost race it reads and
// computes again, for at most ConflictRetry (then ErrConflict). With
// ifRevision > 0 the write applies only to that revision (ErrStale
// otherwise). It returns the written state.
func (s *Store) Update(ctx context.Context, ifRevision int64, change func(cur map[lb.VIPKey]*control.VIP) (map[lb.VIPKey]*control.VIP, error)) (Desired, error) {
	deadline := time.Now().Add(s.cfg.ConflictRetry)
	for {
		cur, err := s.get(ctx, true)
		if err != nil {
			return Desired{}, err
		}
		if ifRevision > 0 && cur.Revision != ifRevision {
			return Desired{}, fmt.Errorf("%w: read at revision %d, now %d", ErrStale, ifRevision, cur.Revision)
		}
		next, err := change(cur.VIPs)
		if err != nil {
			return Desired{}, err
		}
		data, err := control.EncodeState(next)
		if err != nil {
			return Desired{}, err
		}
		ok, rev, err := s.put(ctx, cur.Revision, data)
		if err != nil {
			return Desired{}, err
		}
		if ok {
			return Desired{VIPs: next, Revision: rev}, nil
		}
		if ifRevision > 0 {
			return Desired{}, fmt.Errorf("%w: read at revision %d", ErrStale, ifRevision)
		}
		if time.Now().After(deadline) {
			return Desired{}, ErrConflict
		}
	}
}

// Watch calls apply with the fleet's desired state now and on every
// change after it, until ctx ends. A lost connection is retried; after
// compaction or a reconnect it reads the whole state again, so that
// apply always gets the latest whole set. contact is called with the
// time of every answer from etcd (progress notifications included), so
// the caller can tell how fresh its view is.
func (s *Store) Watch(ctx context.Context, apply func(Desired), contact func(time.Time)) {
	for ctx.Err() == nil {
		d, err := s.Get(ctx)
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		contact(time.Now())
		apply(d)
		s.follow(ctx, d.Revision, apply, contact)
	}
}

// put writes data as the desired state if the key is still at revision
// rev (0: absent): ok false when another write came first. An attempt
// that fails on the way is retried (see retry); a retry that finds the
// key holding data at a newer revision is the earlier attempt's
// success (an attempt can time out at the client and still commit).
func (s *Store) put(ctx context.Context, rev int64, data []byte) (ok bool, newRev int64, err error) {
	key := s.DesiredKey()
	failed := false
	err = s.retry(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(data))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			failed = true
			return err
		}
		switch {
		case resp.Succeeded:
			ok, newRev = true, resp.Header.Revision
		case failed:
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && kvs[0].ModRevision > rev && bytes.Equal(kvs[0].Value, data) {
				ok, newRev = true, kvs[0].ModRevision
			}
		}
		return nil
	})
	if err != nil {
		return false, 0, fmt.Errorf("write %s to etcd: %w", key, err)
	}
	return ok, newRev, nil
}

func (s *Store) follow(ctx context.Context, rev int64, apply func(Desired), contact func(time.Time)) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Watch from the revision after the one read: nothing between is lost.
	ch := s.cli.Watch(wctx, s.DesiredKey(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-progress.C:
			pctx, pcancel := context.WithTimeout(wctx, s.cfg.RequestTimeout)
			err := s.cli.RequestProgress(pctx)
			pcancel()
			if err != nil {
				return
			}
		case resp, ok := <-ch:
			if !ok || resp.Err() != nil || resp.Canceled {
				return
			}
			contact(time.Now())
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					apply(Desired{VIPs: map[lb.VIPKey]*control.VIP{}, Revision: ev.Kv.ModRevision})
					continue
				}
				vips, err := control.DecodeState(ev.Kv.Value, "etcd key "+s.DesiredKey())
				if err != nil {
					// A bad document is refused whole; the node keeps what it runs.
					continue
				}
				apply(Desired{VIPs: vips, Revision: ev.Kv.ModRevision})
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// A real is named by its VIP and address in health observations.
func realName(k control.RealKey) string { return lb.VIPName(k.VIP) + "/" + k.Addr.String() }

// ParseRealName is the inverse of the names in Report.Down.
func ParseRealName(s string) (control.RealKey, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return control.RealKey{}, fmt.Errorf("real %q: want VIP/ADDRESS", s)
	}
	key, err := lb.ParseVIPName(s[:i])
	if err != nil {
		return control.RealKey{}, err
	}
	a, err := netip.ParseAddr(s[i+1:])
	if err != nil {
		return control.RealKey{}, fmt.Errorf("real %q: %w", s, err)
	}
	return control.RealKey{VIP: key, Addr: a}, nil
}
