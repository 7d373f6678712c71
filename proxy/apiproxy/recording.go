package apiproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"tailscale.com/ipn/ipnstate"
	ksr "tailscale.com/k8s-operator/sessionrecording"
	"tailscale.com/k8s-operator/sessionrecording/tsrecorder"
	"tailscale.com/k8s-operator/sessionrecording/ws"
	"tailscale.com/sessionrecording"
	"tailscale.com/tstime"
	"tailscale.com/types/logger"
)

// RecorderPort is where recorders take uploads (tsrecorder's, and
// tsinject-proxy recorder's).
const RecorderPort = 80

// Recording sends the exec and attach sessions of callers whose grants
// name recorders (`recorder`: their tags) to one of them, with
// tailscale.com's own session recording (the Tailscale operator's): an
// asciinema cast of the session, with who, which pod, container and
// command in its header. Where a grant enforces recording, a session no
// recorder takes is refused before it reaches the pod, and one whose
// recorder fails ends.
type Recording struct {
	// Dial reaches recorders: the proxy's tailnet node's Dial (an error
	// until it serves).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Recorders lists the tailnet addresses of peers with any of tags.
	Recorders func(ctx context.Context, tags []string) ([]netip.AddrPort, error)
	// Ping returns once the tailnet address answers a ping, or with why
	// not: sessions end when their recorder stops answering (nil: only
	// when its upload fails).
	Ping func(ctx context.Context, addr netip.Addr) error
	Logf logger.Logf

	watchOnce sync.Once
	watch     *recorderWatch
}

// recorderWatch is the sessions' pinger of their recorders (nil without
// Ping).
func (rc *Recording) recorderWatch() *recorderWatch {
	rc.watchOnce.Do(func() {
		if rc.Ping != nil {
			rc.watch = &recorderWatch{ping: rc.Ping, every: recorderPingEvery, wait: recorderPingWait, deadAfter: RecorderDeadAfter}
		}
	})
	return rc.watch
}

// podSession is the namespace, pod and kind of an exec or attach path.
func podSession(path string) (namespace, pod string, kind ksr.SessionType, ok bool) {
	p := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	if len(p) != 7 || p[0] != "api" || p[1] != "v1" || p[2] != "namespaces" || p[4] != "pods" {
		return "", "", "", false
	}
	switch p[6] {
	case "exec":
		return p[3], p[5], ksr.ExecSessionType, true
	case "attach":
		return p[3], p[5], ksr.AttachSessionType, true
	}
	return "", "", "", false
}

// streamProtocol is the streaming protocol a session request asks for:
// SPDY (kubectl before 1.31, and its fallback) or WebSocket.
func streamProtocol(h http.Header) ksr.Protocol {
	switch up := strings.ToLower(h.Get("Upgrade")); {
	case strings.HasPrefix(up, "spdy/"):
		return ksr.SPDYProtocol
	case up == "websocket":
		return ksr.WSProtocol
	}
	return ""
}

// recordWriter decides a session's recording: the ResponseWriter that
// records it (w itself when it goes unrecorded), or a refusal to send.
func (rc *Recording) recordWriter(ctx context.Context, w http.ResponseWriter, r *http.Request, id *resolved) (http.ResponseWriter, string) {
	if len(id.Recorders) == 0 && !id.EnforceRecorder {
		return w, ""
	}
	unrecorded := func(why string) (http.ResponseWriter, string) {
		if id.EnforceRecorder {
			return nil, "tsinject: your tailnet grant requires session recording (enforceRecorder), and " + why + "; the session is refused"
		}
		rc.Logf("warning: session %s by %s is not recorded: %s", r.URL.Path, id.who, why)
		return w, ""
	}
	ns, pod, kind, ok := podSession(r.URL.Path)
	if !ok {
		return unrecorded("sessions through a node's kubelet (nodes/NAME/proxy) cannot be recorded")
	}
	if len(id.Recorders) == 0 {
		return unrecorded("the grant names no recorder")
	}
	proto := streamProtocol(r.Header)
	if proto == "" {
		return unrecorded("the request is neither a SPDY nor a WebSocket stream")
	}
	addrs, err := rc.Recorders(ctx, id.Recorders)
	if err != nil {
		return unrecorded("its recorders could not be looked up: " + err.Error())
	}
	if len(addrs) == 0 {
		return unrecorded(fmt.Sprintf("no recorder tagged %s is on the tailnet", strings.Join(id.Recorders, " or ")))
	}
	if proto == ksr.SPDYProtocol {
		// tailscale.com's SPDY parser reads one frame per read: a client
		// that opens its streams in one write has its output go
		// unrecorded, and it bounds no header's decompression. Only
		// WebSocket sessions are recorded. kubectl tries WebSocket first
		// and falls back to SPDY when that is refused, so this may be
		// what it prints for a refused WebSocket attempt: say so.
		return unrecorded("only WebSocket sessions can be recorded, and this one is SPDY (kubectl 1.31 and later try WebSocket first and fall back to SPDY when it is refused: the proxy's log says why that attempt was)")
	}
	// The recorder first, before the request goes on: a session that
	// must be recorded and that no recorder takes never reaches the pod.
	// (tailscale.com's own hijacker connects only once the API server has
	// switched protocols, when a WebSocket exec has already started.)
	rctx, cancel := context.WithCancel(context.Background())
	// The recorder the upload goes to is the one last dialled: the
	// client tries them in turn and keeps the first that takes it.
	var mu sync.Mutex
	var took netip.Addr
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := rc.Dial(ctx, network, addr)
		if ap, perr := netip.ParseAddrPort(addr); err == nil && perr == nil {
			mu.Lock()
			took = ap.Addr()
			mu.Unlock()
		}
		return c, err
	}
	wc, _, errc, err := sessionrecording.ConnectToRecorder(rctx, addrs, dial)
	if err != nil {
		cancel()
		return unrecorded("no recorder took the session: " + err.Error())
	}
	mu.Lock()
	recAddr := took
	mu.Unlock()
	upload := newAsyncUpload(wc, uploadBuffer, rc.Logf)
	qp := r.URL.Query()
	ch := sessionrecording.CastHeader{
		Version: 2, Timestamp: time.Now().Unix(), Command: headerCommand(qp["command"]),
		SrcNode: strings.TrimSuffix(id.res.Node.Name, "."), SrcNodeID: id.res.Node.StableID,
		Kubernetes: &sessionrecording.Kubernetes{PodName: pod, Namespace: ns, Container: qp.Get("container"), SessionType: string(kind)},
	}
	if id.res.Node.IsTagged() {
		ch.SrcNodeTags = id.res.Node.Tags
	} else if id.res.UserProfile != nil {
		ch.SrcNodeUser, ch.SrcNodeUserID = id.res.UserProfile.LoginName, id.res.Node.User
	}
	sw := &sessionWriter{ResponseWriter: w, ctx: rctx, cancel: cancel, upload: upload, errc: errc, header: ch,
		tty: queryBool(qp.Get("tty")), proto: proto, failOpen: !id.EnforceRecorder, who: id.who, logf: rc.Logf}
	if watch := rc.recorderWatch(); watch != nil && recAddr.IsValid() {
		var release func()
		sw.recorderDead, release = watch.watch(recAddr)
		// The pinger stops with the session's last use of the recorder.
		context.AfterFunc(rctx, release)
	}
	return sw, ""
}

// maxHeaderCommand bounds the command a cast's header names: the caller
// chooses it, and every recorder's index keeps each session's header.
const maxHeaderCommand = 4 << 10

// headerCommand is the session's command for its cast's header, cut to
// maxHeaderCommand and saying so (the session still runs all of it).
func headerCommand(args []string) string {
	c := strings.Join(args, " ")
	if len(c) <= maxHeaderCommand {
		return c
	}
	return strings.ToValidUTF8(c[:maxHeaderCommand], "") + " … (cut: the command was " + strconv.Itoa(len(c)) + " bytes)"
}

// sessionWriter is a session's ResponseWriter while it is recorded: on
// the switch of protocols it wraps the stream so that what the session
// shows goes to the recorder, and it ends the session if the recorder
// fails (unless the grant lets it go on unrecorded).
type sessionWriter struct {
	http.ResponseWriter
	ctx      context.Context
	cancel   context.CancelFunc
	upload   *asyncUpload
	errc     <-chan error
	header   sessionrecording.CastHeader
	tty      bool
	proto    ksr.Protocol
	failOpen bool
	who      string
	logf     logger.Logf
	hijacked bool
	// recorderDead is closed when the recorder stops answering pings (nil:
	// not watched).
	recorderDead <-chan struct{}
}

func (s *sessionWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	s.hijacked = true
	log := zapLogf(s.logf)
	rec := tsrecorder.New(s.upload, tstime.DefaultClock{}, time.Now(), s.failOpen, log)
	lc, err := ws.New(s.ctx, &frameLimit{Conn: conn, max: MaxClientMessage}, rec, s.header, s.tty, log)
	if err != nil {
		conn.Close()
		s.upload.Close()
		s.cancel()
		return nil, nil, err
	}
	s.logf("recording: %s session by %s to %s/%s is recorded", s.header.Kubernetes.SessionType, s.who, s.header.Kubernetes.Namespace, s.header.Kubernetes.PodName)
	go func() {
		defer s.cancel()
		err := s.recorderFailure()
		if err == nil {
			return
		}
		if s.failOpen {
			s.logf("recording: the recorder failed (%v); the session goes on unrecorded, as the grant allows", err)
			// Output waiting for room in the upload goes on (the
			// recorder client drops the rest of the recording).
			s.upload.Abort(fmt.Errorf("the recorder failed: %w", err))
			return
		}
		s.logf("recording: the recorder failed (%v); the session is ended, as the grant requires recording", err)
		// The session's output may be waiting for room in the upload
		// (holding the stream's write lock, which closing it takes): fail
		// the upload first, which frees it, and close the caller's
		// connection, so that no more of its input reaches the pod.
		s.upload.Abort(fmt.Errorf("the recorder failed: %w", err))
		conn.Close()
		lc.Close()
	}()
	return lc, brw, nil
}

// recorderFailure waits for the session to end (nil) or its recording to
// fail: the recorder stops answering pings, reports an error, or ends
// the upload as if whole while the session goes on.
func (s *sessionWriter) recorderFailure() error {
	select {
	case <-s.ctx.Done():
		return nil
	case <-s.recorderDead:
		return fmt.Errorf("the recorder has not answered a ping for %v", RecorderDeadAfter)
	case err := <-s.errc:
		if err == nil && s.upload.closing() {
			return nil // the session ended, and its recording with it
		}
		if err == nil {
			// What follows would go unrecorded.
			err = errors.New("the recorder ended the upload before the session ended")
		}
		return err
	}
}

// finish ends the upload of a session that never switched protocols (the
// API server refused it): an empty recording.
func (s *sessionWriter) finish() {
	if !s.hijacked {
		s.upload.Close()
		s.cancel()
	}
}

// PeerRecorders finds recorders among a node's peers: those tagged with
// any of tags, online ones first (then by name, so that sessions go to
// the same one while it is up), each at its addresses' RecorderPort.
func PeerRecorders(status func(context.Context) (*ipnstate.Status, error)) func(context.Context, []string) ([]netip.AddrPort, error) {
	return func(ctx context.Context, tags []string) ([]netip.AddrPort, error) {
		st, err := status(ctx)
		if err != nil {
			return nil, err
		}
		var peers []*ipnstate.PeerStatus
		for _, p := range st.Peer {
			if p.Tags != nil && slices.ContainsFunc(tags, func(t string) bool { return slices.Contains(p.Tags.AsSlice(), t) }) {
				peers = append(peers, p)
			}
		}
		slices.SortFunc(peers, func(a, b *ipnstate.PeerStatus) int {
			if a.Online != b.Online {
				if a.Online {
					return -1
				}
				return 1
			}
			return strings.Compare(a.DNSName, b.DNSName)
		})
		var out []netip.AddrPort
		for _, p := range peers {
			for _, ip := range p.TailscaleIPs {
				out = append(out, netip.AddrPortFrom(ip, RecorderPort))
			}
		}
		return out, nil
	}
}

// zapLogf is a zap logger writing to logf (the session recording package
// logs with zap).
func zapLogf(logf logger.Logf) *zap.SugaredLogger {
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{MessageKey: "msg", LevelKey: "level", EncodeLevel: zapcore.LowercaseLevelEncoder})
	core := zapcore.NewCore(enc, zapcore.AddSync(logfWriter(logf)), zapcore.InfoLevel)
	return zap.New(core).Sugar()
}

type logfWriter logger.Logf

func (l logfWriter) Write(p []byte) (int, error) {
	l("recording: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// queryBool reads a boolean query parameter as the API server does
// (strconv.ParseBool: 1, t, true, ...).
func queryBool(v string) bool {
	b, _ := strconv.ParseBool(v)
	return b
}
