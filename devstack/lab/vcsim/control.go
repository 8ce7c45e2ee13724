package main

// Lab control endpoints, for the other simulated parts of the data centre (the iDRAC
// simulator, the ESXi SSH endpoint) and for tests:
//
//	GET  /lab/hosts                        all hosts with identity and state
//	GET  /lab/hosts/<name>                 one host
//	POST /lab/hosts/<name>/reboot?seconds=N[&version=V&build=B]
//	     not responding for N seconds, then connected again (with a new build if given)
//	POST /lab/hosts/<name>/power?state=off|on[&seconds=N]
//	     off: not responding until powered on; on: connected after N seconds of boot
//	POST /lab/hosts/<name>/maintenance?enabled=true|false
//	     what `esxcli system maintenanceMode set` does on the host itself
//	GET|POST /lab/clusters/<name>/vsan     vSAN health and resync (vsan.go)
//
// A host that goes down takes its running VMs with it (powered off, as after a crash).

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type hostView struct {
	Name            string `json:"name"`
	Moid            string `json:"moid"`
	Cluster         string `json:"cluster"`
	ServiceTag      string `json:"service_tag"`
	BMCAddress      string `json:"bmc_address"`
	ConnectionState string `json:"connection_state"`
	InMaintenance   bool   `json:"in_maintenance"`
	Version         string `json:"version"`
	Build           string `json:"build"`
	VMs             int    `json:"vms"`
	Reboots         int    `json:"reboots"`
}

func (l *lab) view(h *hostInfo) hostView {
	host := getHost(h.ref)
	v := hostView{Name: h.name, Moid: h.ref.Value, Cluster: h.cluster,
		ServiceTag: h.hardware.ServiceTag, BMCAddress: h.hardware.BMCAddress}
	simulator.Map.WithLock(host, func() {
		v.ConnectionState = string(host.Runtime.ConnectionState)
		v.InMaintenance = host.Runtime.InMaintenanceMode
		v.Version = host.Summary.Config.Product.Version
		v.Build = host.Summary.Config.Product.Build
		v.VMs = len(host.Vm)
	})
	l.mu.Lock()
	v.Reboots = l.reboots[h.ref]
	l.mu.Unlock()
	return v
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (l *lab) control(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/lab/"), "/"), "/")
	if parts[0] == "clusters" {
		l.vsanControl(w, r, parts)
		return
	}
	if parts[0] != "hosts" {
		writeError(w, http.StatusNotFound, "unknown lab endpoint")
		return
	}
	if len(parts) == 1 {
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "use GET")
			return
		}
		var out []hostView
		for _, cs := range l.spec.Clusters {
			for i := 0; i < cs.Hosts; i++ {
				out = append(out, l.view(l.hosts[hostName(cs.Name, i)]))
			}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	h, ok := l.hosts[parts[1]]
	if !ok {
		writeError(w, http.StatusNotFound, "no such host")
		return
	}
	if len(parts) == 2 {
		writeJSON(w, http.StatusOK, l.view(h))
		return
	}
	if r.Method != http.MethodPost || len(parts) != 3 {
		writeError(w, http.StatusMethodNotAllowed, "use POST on a host action")
		return
	}
	q := r.URL.Query()
	seconds := 0.0
	if s := q.Get("seconds"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 || v > 3600 {
			writeError(w, http.StatusBadRequest, "seconds must be a number from 0 to 3600")
			return
		}
		seconds = v
	}
	switch parts[2] {
	case "reboot":
		version, build := q.Get("version"), q.Get("build")
		if (version == "") != (build == "") {
			writeError(w, http.StatusBadRequest, "give both version and build, or neither")
			return
		}
		l.goDown(h)
		l.bootAfter(h, time.Duration(seconds*float64(time.Second)), version, build)
	case "power":
		switch q.Get("state") {
		case "off":
			l.goDown(h)
		case "on":
			if snapHost(h.ref).connected {
				writeError(w, http.StatusConflict, "host is already up")
				return
			}
			l.bootAfter(h, time.Duration(seconds*float64(time.Second)), "", "")
		default:
			writeError(w, http.StatusBadRequest, "state must be off or on")
			return
		}
	case "maintenance":
		enabled, err := strconv.ParseBool(q.Get("enabled"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "enabled must be true or false")
			return
		}
		if !snapHost(h.ref).connected {
			writeError(w, http.StatusConflict, "host is not responding")
			return
		}
		host := getHost(h.ref)
		simulator.Map.WithLock(host, func() {
			simulator.Map.Update(host, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: enabled}})
		})
	default:
		writeError(w, http.StatusNotFound, "unknown host action")
		return
	}
	writeJSON(w, http.StatusOK, l.view(h))
}

// goDown makes a host stop responding; its running VMs stop with it.
func (l *lab) goDown(h *hostInfo) {
	host := getHost(h.ref)
	l.mu.Lock()
	l.bootGen[h.ref]++ // a pending boot from an earlier reboot must not bring it back early
	l.mu.Unlock()
	var vms []types.ManagedObjectReference
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{
			{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding},
			{Name: "runtime.powerState", Val: types.HostSystemPowerStateUnknown},
		})
		vms = append(vms, host.Vm...)
	})
	for _, ref := range vms {
		vm := getVM(ref)
		if vm == nil {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				simulator.Map.Update(vm, []types.PropertyChange{
					{Name: "runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
					{Name: "summary.runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
				})
			}
		})
	}
}

func (l *lab) bootAfter(h *hostInfo, d time.Duration, version, build string) {
	l.mu.Lock()
	l.bootGen[h.ref]++
	gen := l.bootGen[h.ref]
	l.mu.Unlock()
	go func() {
		time.Sleep(d)
		l.mu.Lock()
		current := l.bootGen[h.ref] == gen
		if current {
			l.reboots[h.ref]++
		}
		l.mu.Unlock()
		if !current {
			return
		}
		host := getHost(h.ref)
		simulator.Map.WithLock(host, func() {
			now := time.Now()
			changes := []types.PropertyChange{
				{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
				{Name: "runtime.powerState", Val: types.HostSystemPowerStatePoweredOn},
				{Name: "runtime.bootTime", Val: &now},
			}
			if version != "" {
				p := *host.Summary.Config.Product
				p.Version, p.Build = version, build
				p.FullName = "VMware ESXi " + version + " build-" + build
				changes = append(changes,
					types.PropertyChange{Name: "summary.config.product", Val: &p},
					types.PropertyChange{Name: "config.product", Val: p})
			}
			simulator.Map.Update(host, changes)
		})
	}()
}
