// Package contract is everything the injector and the data plane must agree
// on: container names, environment variables, ports, paths and the
// sidecar's user. It is a leaf package: both sides import it and nothing else
// of each other, so the data plane stays free of the injector.
package contract

import (
	"encoding/json"
	"strings"
	"time"
)

// Names of what the injector adds to a pod.
const (
	SidecarContainer = "tailscale"
	InitContainer    = "tailscale-init"
	StateVolume      = "tsinject-state"
	AuthVolume       = "tsinject-auth"
	// AuthSecret is the per-namespace copy of the auth key the manager keeps.
	AuthSecret = "tsinject-auth"
	// AuthSecretKey is the key in AuthSecret holding the auth key.
	AuthSecretKey = "authkey"
	// TokenVolume is the projected ServiceAccount token a node exchanges
	// for a one-off key by workload identity federation.
	TokenVolume = "tsinject-token"
	TokenKey    = "token"
	// TokenExpirationSeconds is the projected token's life, the shortest
	// the kubelet allows: a node uses it once, at login, and the kubelet
	// renews it for a restart.
	TokenExpirationSeconds = 600
)

// tsinject's key broker, served by the manager on the webhook's listener
// (Service tsinject-webhook, port 443): the path, and the audience of the
// projected token a node proves its pod with.
const (
	KeyBrokerPath     = "/v1/key"
	KeyBrokerAudience = "tsinject.dev/key-broker"
)

// Paths inside the sidecar container.
const (
	StateDir = "/var/lib/tsinject"
	// RecordingsDir is where a Recorder's volume is mounted.
	RecordingsDir = "/var/lib/tsinject-recordings"
	AuthDir       = "/var/run/tsinject/auth"
	AuthKeyFile   = AuthDir + "/" + AuthSecretKey
	TokenDir      = "/var/run/tsinject/token"
	// ExitDenyDir holds an exit node's deny list (ExitDenyKey).
	ExitDenyDir  = "/var/run/tsinject/exit-deny"
	ExitDenyKey  = "deny"
	ExitDenyFile = ExitDenyDir + "/" + ExitDenyKey
	TokenFile    = TokenDir + "/" + TokenKey
	// ServiceAccountDir is where the sidecar finds its API credentials
	// (state in a Secret).
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// Transparent egress's TUN device, which carries UDP and ICMP to the
// tailnet: tailscale-init creates it (persistent, owned by ProxyUID) and
// makes its device node in TunDir, a volume both containers mount; the
// sidecar attaches to it without any capability.
const (
	TunVolume = "tsinject-tun"
	TunDir    = "/var/run/tsinject/tun"
	// TunDevice is the device node's name in TunDir (/dev/net/tun's
	// character device, 10:200).
	TunDevice = "tun"
	// TunName is the interface's name in the pod.
	TunName = "tsi0"
	// TunLocal4 and TunLocal6 are the TUN's own addresses, the source the
	// pod's kernel gives what it routes there; the sidecar translates them
	// to and from the node's tailnet addresses, which are not known until
	// it joins (after init has exited). Link-local and a unique-local /128
	// outside the tailnet's range: no pod talks to them.
	TunLocal4 = "169.254.41.41"
	TunLocal6 = "fd74:7369:6e6a::41"
)

// ProxyUID is the sidecar's fixed user and group. Transparent egress
// exempts this UID from redirection, so it must differ from the app's.
const ProxyUID = 41641

// Names of the health port (/metrics too) in pod specs: the sidecar's in
// injected pods, and the proxy replicas'. Monitoring selects on them (the
// chart's PodMonitors).
const (
	SidecarHealthPortName = "ts-health"
	ProxyHealthPortName   = "health"
)

// Ports the sidecar listens on inside the pod (localhost unless noted).
const (
	HealthPort    = 9002  // /healthz, /readyz, /metrics (pod IP, for probes)
	RedirectPort  = 15001 // transparent egress: redirected TCP arrives here
	DNSPort       = 15053 // transparent egress: redirected DNS arrives here
	SOCKS5Port    = 1055  // explicit egress: SOCKS5 proxy
	HTTPProxyPort = 1056  // explicit egress: HTTP CONNECT / forward proxy
)

// The cluster nameserver (`tsinject nameserver`): the port it listens on
// (its Service maps 53 to it), and the EDNS0 local options through which
// the cluster's CoreDNS names the pod that asked (the snippet `tsinject
// check` prints sets them from CoreDNS's kubernetes metadata).
const (
	NameserverPort = 5353
	// DNSOptionNamespace carries the asking pod's namespace: the names a
	// namespace may resolve are its own egress Services'.
	DNSOptionNamespace uint16 = 0xffee
	// DNSOptionPod carries the asking pod's name, which the Event for a
	// name without an egress path is about.
	DNSOptionPod uint16 = 0xffef
)

// The tailnet identity behind a request through an auth-mode API server
// proxy, which it adds to the impersonated user's extras: the cluster's
// audit log records them with each request (impersonatedUser.extra). The
// proxy's impersonation role allows exactly these keys.
const (
	ExtraTailnetLogin  = "tsinject.dev/tailnet-login"   // the user's login (absent for tagged nodes)
	ExtraTailnetNode   = "tsinject.dev/tailnet-node"    // the caller's MagicDNS name
	ExtraTailnetNodeID = "tsinject.dev/tailnet-node-id" // its stable node ID
	ExtraTailnetTags   = "tsinject.dev/tailnet-tags"    // its tags, one value each
)

// TailnetExtras are the extra keys above, in order.
var TailnetExtras = []string{ExtraTailnetLogin, ExtraTailnetNode, ExtraTailnetNodeID, ExtraTailnetTags}

// Environment variables of tsinject-proxy. Every flag of the sidecar has
// one; the injector sets them and the sidecar reads them.
const (
	EnvControlURL  = "TSINJECT_CONTROL_URL"
	EnvAuthKeyFile = "TSINJECT_AUTHKEY_FILE"
	// EnvClientID, if set, selects workload identity federation with this
	// client ID; the node then exchanges the token in EnvIDTokenFile.
	EnvClientID    = "TSINJECT_CLIENT_ID"
	EnvIDTokenFile = "TSINJECT_ID_TOKEN_FILE"
	// EnvKeyBrokerURL, if set, makes the node ask tsinject's key broker
	// for a one-off key with the token in EnvIDTokenFile, verifying the
	// broker with the CA bundle (PEM) in EnvKeyBrokerCA.
	EnvKeyBrokerURL = "TSINJECT_KEY_BROKER_URL"
	EnvKeyBrokerCA  = "TSINJECT_KEY_BROKER_CA"
	EnvHostname     = "TSINJECT_HOSTNAME" // a template, see Hostname placeholders
	EnvTags         = "TSINJECT_TAGS"
	EnvState        = "TSINJECT_STATE" // "ephemeral" | "secret"
	EnvStateDir     = "TSINJECT_STATE_DIR"
	EnvStateSecret  = "TSINJECT_STATE_SECRET" // template, default tsinject-state-{name}
	EnvEgress       = "TSINJECT_EGRESS"
	EnvEgressMode   = "TSINJECT_EGRESS_MODE" // "explicit" | "transparent"
	EnvExpose       = "TSINJECT_EXPOSE"
	EnvAcceptRoutes = "TSINJECT_ACCEPT_ROUTES"
	EnvHealthAddr   = "TSINJECT_HEALTH_ADDR"
	EnvSOCKS5Addr   = "TSINJECT_SOCKS5_ADDR"
	EnvHTTPProxy    = "TSINJECT_HTTP_PROXY_ADDR"
	EnvRedirectAddr = "TSINJECT_REDIRECT_ADDR"
	EnvDNSAddr      = "TSINJECT_DNS_ADDR"
	// EnvUseExitNode is the exit node (MagicDNS name or tailnet IP) a pod's
	// traffic to anywhere but the cluster and the tailnet leaves through;
	// EnvExitDeny then lists the cluster's ranges, which never do.
	EnvUseExitNode = "TSINJECT_USE_EXIT_NODE"
	// EnvTunDir, in transparent mode, is where the sidecar finds the TUN's
	// device node (TunDir); unset, only TCP and DNS are redirected.
	EnvTunDir       = "TSINJECT_TUN_DIR"
	EnvGracePeriod  = "TSINJECT_GRACE_PERIOD"
	EnvProxyUID     = "TSINJECT_PROXY_UID"
	EnvPodName      = "TSINJECT_POD_NAME"
	EnvPodNamespace = "TSINJECT_POD_NAMESPACE"
	EnvPodUID       = "TSINJECT_POD_UID"
	EnvPodIP        = "TSINJECT_POD_IP"
	// EnvHostIP is the node's IP (downward API status.hostIP); an exit-node
	// connector refuses it, as it does the ranges in EnvExitDeny.
	EnvHostIP   = "TSINJECT_HOST_IP"
	EnvExitDeny = "TSINJECT_EXIT_DENY"
	// EnvHostIPs and EnvPodIPs are every address of the node and the pod
	// (downward API status.hostIPs, status.podIPs; comma-separated), which
	// an exit node refuses too.
	EnvHostIPs = "TSINJECT_HOST_IPS"
	EnvPodIPs  = "TSINJECT_POD_IPS"
	// EnvExitDenyFile names a file of CIDRs (comma- or line-separated) an
	// exit node also refuses, re-read while it runs: the cluster's node and
	// API server addresses, which the manager keeps current in a Secret
	// mounted there (ExitDenyFile).
	EnvExitDenyFile = "TSINJECT_EXIT_DENY_FILE"
	// EnvMemoryLimit is the container's memory limit in bytes (the downward
	// API's limits.memory); the Go runtime keeps its heap under a fraction
	// of it (package memlimit). Both binaries read it.
	EnvMemoryLimit = "TSINJECT_MEMORY_LIMIT"
	// EnvDebugAddr, if set, is a loopback address where tsinject-proxy
	// serves Go's profiles (package debugserver); unset, nothing listens.
	EnvDebugAddr = "TSINJECT_DEBUG_ADDR"

	// Settings of the sidecar that the injector does not set.
	EnvRedirectPort = "TSINJECT_REDIRECT_PORT"
	EnvDNSPort      = "TSINJECT_DNS_PORT"
	EnvAuthKeyWait  = "TSINJECT_AUTHKEY_WAIT"
	EnvVerbose      = "TSINJECT_VERBOSE"
	// EnvKubeRoot prefixes the service account directory (outside a pod).
	EnvKubeRoot = "TSINJECT_KUBE_ROOT"

	// Settings of the proxies (connector, API proxy) that their
	// controllers set.
	EnvHostnamePrefix = "TSINJECT_HOSTNAME_PREFIX"
	EnvRoutes         = "TSINJECT_ROUTES"
	EnvExitNode       = "TSINJECT_EXIT_NODE"
	EnvAPIProxyMode   = "TSINJECT_APIPROXY_MODE"
	EnvAPIProxyTLS    = "TSINJECT_APIPROXY_TLS"
	// EnvTarget is where a forwarding proxy sends what it accepts: an
	// egress proxy's tailnet target (MagicDNS name or IP), an ingress
	// proxy's Service address; EnvPorts its ports (FormatPortMaps).
	EnvTarget = "TSINJECT_TARGET"
	// EnvRecordingsDir is where a session recorder stores its casts;
	// EnvRecorderUploaderTags, EnvRecorderRetention,
	// EnvRecorderMaxSessions and EnvRecorderMaxBytes its flags of those
	// names (a Recorder's spec).
	EnvRecordingsDir        = "TSINJECT_RECORDINGS_DIR"
	EnvRecorderUploaderTags = "TSINJECT_RECORDER_UPLOADER_TAGS"
	EnvRecorderRetention    = "TSINJECT_RECORDER_RETENTION"
	EnvRecorderMaxSessions  = "TSINJECT_RECORDER_MAX_SESSIONS"
	EnvRecorderMaxBytes     = "TSINJECT_RECORDER_MAX_BYTES"
	EnvPorts                = "TSINJECT_PORTS"
	// EnvListenAddr narrows the address an egress proxy's ports listen on
	// (default all of the pod's; the sandbox uses loopback).
	EnvListenAddr = "TSINJECT_LISTEN_ADDR"
	// EnvOneName ("true") makes a proxy set's replicas share one tailnet
	// identity, kept in the set's first state Secret (OneNameSecret): one
	// replica serves it, the others stand by to take it over.
	EnvOneName = "TSINJECT_ONE_NAME"
	// EnvPoolSecret makes an egress proxy a pool's replica: it serves the
	// Services listed in that Secret (key PoolServicesKey, written by the
	// manager), re-read through the API while it runs, instead of
	// EnvTarget and EnvPorts.
	EnvPoolSecret = "TSINJECT_POOL_SECRET"
)

// AnnotationServing, on a one-name set's state Secret, says which replica
// serves the name and when it last said so: a ServingRecord as JSON. The
// replicas take and keep the name by writing it with the Secret's
// resourceVersion (whoever writes first wins).
const AnnotationServing = "tsinject.dev/serving"

// ServingRecord is AnnotationServing's value.
type ServingRecord struct {
	// Pod is the replica serving the name; empty when none does (the last
	// one let go of it).
	Pod string `json:"pod"`
	// Renewed is when it last renewed its hold, by its own clock.
	Renewed time.Time `json:"renewed"`
}

// ParseServing reads AnnotationServing's value; a missing or malformed
// one is an empty record.
func ParseServing(s string) ServingRecord {
	var rec ServingRecord
	if s != "" {
		_ = json.Unmarshal([]byte(s), &rec)
	}
	return rec
}

// String is the record as AnnotationServing holds it.
func (r ServingRecord) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// OneNameSecret is the state Secret a one-name set's replicas share: the
// first replica's, named after the pod (<set>-0) like every set's, so the
// replica's Role and the admission policies name it the same way.
func OneNameSecret(pod string) string {
	if i := strings.LastIndexByte(pod, '-'); i > 0 {
		return pod[:i] + "-0"
	}
	return pod
}

// Hostname template placeholders, filled in by the sidecar at run time from
// the downward API (a pod may have only generateName at admission).
const (
	PlaceholderName      = "{name}"
	PlaceholderNamespace = "{namespace}"
	DefaultHostname      = PlaceholderNamespace + "-" + PlaceholderName
	DefaultStateSecret   = "tsinject-state-" + PlaceholderName
)

// Egress modes.
const (
	EgressExplicit    = "explicit"
	EgressTransparent = "transparent"
)

// State stores of a node (contract.EnvState).
const (
	StateEphemeral = "ephemeral" // memory; the node is removed when it leaves
	StateSecret    = "secret"    // a Kubernetes Secret; identity survives restarts
	StateFiles     = "dir"       // files in the state directory; identity survives container restarts
)

// Keys a proxy (connector, API proxy) writes into its state Secret to
// report itself; the controllers read them into status. Values are JSON.
const (
	DevicePrefix           = "device_"
	DeviceFQDN             = "device_fqdn"              // string
	DeviceIPs              = "device_ips"               // []string
	DeviceAdvertisedRoutes = "device_advertised_routes" // []string
	DeviceApprovedRoutes   = "device_approved_routes"   // []string
	DeviceURL              = "device_url"               // string (API proxy)
	DevicePeerPaths        = "device_peer_paths"        // map[string]int: peers talked to, by path
	DeviceEgressTarget     = "device_egress_target"     // EgressTargetState (egress proxy)
	DeviceEgressTargets    = "device_egress_targets"    // map[string]EgressTargetState by PoolService.Service (a pool's egress proxy)
	DeviceCertificate      = "device_certificate"       // CertificateState (web proxy)
)

// EgressTargetState is what an egress proxy knows of its tailnet target.
type EgressTargetState struct {
	// Reason is one of the EgressTarget* reasons.
	Reason string `json:"reason"`
	// Message says what the proxy saw, for people.
	Message string `json:"message,omitempty"`
	// Addrs are the target's tailnet addresses, when known.
	Addrs []string `json:"addrs,omitempty"`
}

// Reasons of an EgressTargetState.
const (
	EgressTargetReachable = "TargetReachable" // a peer, online, and the last dial (if any) worked
	EgressTargetUnknown   = "TargetUnknown"   // no peer has that name or address (or the policy hides it)
	EgressTargetOffline   = "TargetOffline"   // the peer is known but offline
	EgressTargetDialFails = "TargetDialFails" // the last dial failed (unreachable, or refused by its policy)
)
