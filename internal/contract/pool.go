package contract

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PoolServicesKey is the key of a pool's files Secret (EnvPoolSecret)
// listing the Services its replicas serve: []PoolService as JSON.
const PoolServicesKey = "services"

// PoolPorts bounds the ports a pool hands out to its Services' ports:
// above the well-known ones, below the ephemeral range, never HealthPort.
const (
	PoolPortMin = 10000
	PoolPortMax = 29999
)

// PoolService is one egress Service a pool serves.
type PoolService struct {
	// Service is the Service's namespace/name.
	Service string `json:"service"`
	// Target is its tailnet target: a MagicDNS name or an IP address.
	Target string `json:"target"`
	// Ports map the pool's ports (each used by this Service alone) to the
	// target's, as FormatPortMaps writes them.
	Ports string `json:"ports"`
}

// ParsePoolServices reads a pool's list, refusing what a replica could not
// serve as written: a bad target or port, or a port two Services claim.
func ParsePoolServices(b []byte) ([]PoolService, error) {
	var list []PoolService
	if len(b) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("pool services: %w", err)
	}
	owner := map[string]string{}
	for _, s := range list {
		if ns, name, ok := strings.Cut(s.Service, "/"); !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("pool services: %q is not namespace/name", s.Service)
		}
		if _, err := netip.ParseAddr(s.Target); err != nil {
			if err := ValidateHost(s.Target); err != nil {
				return nil, fmt.Errorf("pool services: %s: target: %w", s.Service, err)
			}
		}
		ports, err := ParsePortMaps(s.Ports)
		if err != nil || len(ports) == 0 {
			return nil, fmt.Errorf("pool services: %s: ports %q: %v", s.Service, s.Ports, err)
		}
		for _, p := range ports {
			if p.Port < PoolPortMin || p.Port > PoolPortMax {
				return nil, fmt.Errorf("pool services: %s: port %d is outside the pool's %d-%d", s.Service, p.Port, PoolPortMin, PoolPortMax)
			}
			k := strconv.Itoa(int(p.Port)) + "/" + p.Proto
			if other, ok := owner[k]; ok {
				return nil, fmt.Errorf("pool services: port %s is both %s's and %s's", k, other, s.Service)
			}
			owner[k] = s.Service
		}
	}
	return list, nil
}
