package main

// Lab configuration: what the simulated vCenter contains. It comes either from a JSON file
// (-config) or from the uniform-size flags (-clusters/-hosts/-vms), never both silently:
// a file wins and the size flags are rejected with it.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Device kinds a VM can be given in the lab configuration. Each one matches a reason a real
// vCenter cannot vMotion the VM (or, for cdrom_shared_iso, a device that does not block).
var deviceKinds = map[string]bool{
	"usb_passthrough":   true, // host USB device passed through (VirtualUSB with host backing)
	"cdrom_host_device": true, // connected CD-ROM backed by the host's optical drive
	"cdrom_local_iso":   true, // connected CD-ROM with an ISO on the host's local datastore
	"cdrom_shared_iso":  true, // connected CD-ROM with an ISO on shared storage (movable)
	"floppy_connected":  true, // connected floppy backed by a host device
	"ft":                true, // Fault Tolerance primary
	"vgpu":              true, // NVIDIA GRID vGPU (PCI passthrough with vmiop backing)
	"pci_passthrough":   true, // DirectPath I/O device
	"local_disk":        true, // VM files and disk on the host's local datastore
}

type HASpec struct {
	Enabled          bool `json:"enabled"`
	AdmissionControl bool `json:"admission_control"`
	// FailoverLevel is the number of host failures HA admission control reserves for.
	FailoverLevel int32 `json:"failover_level"`
}

type DRSSpec struct {
	Enabled bool `json:"enabled"`
	// Behavior is fullyAutomated, partiallyAutomated or manual.
	Behavior string `json:"behavior"`
}

type VMSpec struct {
	Name string `json:"name"`
	// Host is the 0-based index of the host inside its cluster.
	Host     int      `json:"host"`
	PowerOn  *bool    `json:"power_on"`
	MemoryMB int32    `json:"memory_mb"`
	CPUs     int32    `json:"cpus"`
	Devices  []string `json:"devices"`
	// DRSBehavior is a per-VM DRS override (manual, partiallyAutomated, fullyAutomated, disabled).
	DRSBehavior string `json:"drs_behavior"`
	// Tools false: VMware Tools not running in the guest (vCenter then refuses ShutdownGuest);
	// absent or true: running.
	Tools *bool `json:"tools"`
}

// RuleSpec is a VM-host affinity rule: VMs (by name) must/should run on Hosts (indexes).
type RuleSpec struct {
	Name      string   `json:"name"`
	VMs       []string `json:"vms"`
	Hosts     []int    `json:"hosts"`
	Mandatory bool     `json:"mandatory"`
	Anti      bool     `json:"anti"`
}

type ClusterSpec struct {
	Name         string     `json:"name"`
	Hosts        int        `json:"hosts"`
	VMsPerHost   int        `json:"vms_per_host"`
	HostMemoryMB int64      `json:"host_memory_mb"`
	VMMemoryMB   int32      `json:"vm_memory_mb"`
	Version      string     `json:"version"`
	Build        string     `json:"build"`
	HA           *HASpec    `json:"ha"`
	DRS          *DRSSpec   `json:"drs"`
	VMs          []VMSpec   `json:"vms"`
	Rules        []RuleSpec `json:"rules"`
	// InMaintenance lists host indexes that start in maintenance mode.
	InMaintenance []int `json:"in_maintenance"`
	// VSAN makes the cluster a vSAN cluster (see vsan.go for what is simulated).
	VSAN *VSANSpec `json:"vsan"`
}

// HostHardware ties a simulated ESXi host to its (simulated) iDRAC.
type HostHardware struct {
	ServiceTag string `json:"service_tag"`
	BMCAddress string `json:"bmc_address"`
}

type LabSpec struct {
	Datacenter string        `json:"datacenter"`
	Clusters   []ClusterSpec `json:"clusters"`
	// MigrateMS is the simulated vMotion time per VM, plus MigrateMSPerGB per GiB of VM memory.
	MigrateMS      int `json:"migrate_ms"`
	MigrateMSPerGB int `json:"migrate_ms_per_gb"`
	// Hardware maps host names to service tag / BMC address (the iDRAC mapping).
	Hardware map[string]HostHardware `json:"hardware"`
}

func loadSpec(path string) (*LabSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read lab config: %w", err)
	}
	spec := &LabSpec{}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(spec); err != nil {
		return nil, fmt.Errorf("lab config %s: %w", path, err)
	}
	return spec, nil
}

func loadHardwareMap(path string) (map[string]HostHardware, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read hardware map: %w", err)
	}
	hw := map[string]HostHardware{}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hw); err != nil {
		return nil, fmt.Errorf("hardware map %s: %w", path, err)
	}
	return hw, nil
}

func uniformSpec(clusters, hosts, vms int) *LabSpec {
	spec := &LabSpec{}
	for i := 0; i < clusters; i++ {
		spec.Clusters = append(spec.Clusters, ClusterSpec{
			Name: fmt.Sprintf("cluster%02d", i+1), Hosts: hosts, VMsPerHost: vms,
		})
	}
	return spec
}

// applyDefaults fills unset values and validates the whole spec before anything is created,
// so a bad config fails with one clear message and no half-built lab.
func (s *LabSpec) applyDefaults() error {
	if s.Datacenter == "" {
		s.Datacenter = "dc1"
	}
	if s.MigrateMS < 0 || s.MigrateMSPerGB < 0 {
		return fmt.Errorf("migrate_ms and migrate_ms_per_gb must not be negative")
	}
	if len(s.Clusters) == 0 {
		return fmt.Errorf("the lab needs at least one cluster")
	}
	names := map[string]bool{}
	for ci := range s.Clusters {
		c := &s.Clusters[ci]
		if c.Name == "" {
			c.Name = fmt.Sprintf("cluster%02d", ci+1)
		}
		if names[c.Name] {
			return fmt.Errorf("duplicate cluster name %q", c.Name)
		}
		names[c.Name] = true
		if c.Hosts < 1 || c.Hosts > 64 {
			return fmt.Errorf("cluster %s: hosts must be 1..64, got %d", c.Name, c.Hosts)
		}
		if c.VMsPerHost < 0 || c.VMsPerHost > 500 {
			return fmt.Errorf("cluster %s: vms_per_host must be 0..500, got %d", c.Name, c.VMsPerHost)
		}
		if c.HostMemoryMB == 0 {
			c.HostMemoryMB = 262144
		}
		if c.VMMemoryMB == 0 {
			c.VMMemoryMB = 4096
		}
		if c.Version == "" {
			c.Version = "7.0.3"
		}
		if c.Build == "" {
			c.Build = "21930508"
		}
		if c.HA == nil {
			c.HA = &HASpec{Enabled: true, AdmissionControl: true, FailoverLevel: 1}
		}
		if c.DRS == nil {
			c.DRS = &DRSSpec{Enabled: true, Behavior: "fullyAutomated"}
		}
		if c.DRS.Behavior == "" {
			c.DRS.Behavior = "fullyAutomated"
		}
		switch c.DRS.Behavior {
		case "fullyAutomated", "partiallyAutomated", "manual":
		default:
			return fmt.Errorf("cluster %s: unknown DRS behavior %q", c.Name, c.DRS.Behavior)
		}
		for _, h := range c.InMaintenance {
			if h < 0 || h >= c.Hosts {
				return fmt.Errorf("cluster %s: in_maintenance host index %d out of range", c.Name, h)
			}
		}
		vmNames := map[string]bool{}
		for vi := range c.VMs {
			v := &c.VMs[vi]
			if v.Name == "" {
				return fmt.Errorf("cluster %s: every listed VM needs a name", c.Name)
			}
			if names["vm:"+v.Name] {
				return fmt.Errorf("duplicate VM name %q", v.Name)
			}
			names["vm:"+v.Name] = true
			vmNames[v.Name] = true
			if v.Host < 0 || v.Host >= c.Hosts {
				return fmt.Errorf("VM %s: host index %d out of range", v.Name, v.Host)
			}
			if v.MemoryMB == 0 {
				v.MemoryMB = c.VMMemoryMB
			}
			if v.CPUs == 0 {
				v.CPUs = 2
			}
			for _, d := range v.Devices {
				if !deviceKinds[d] {
					return fmt.Errorf("VM %s: unknown device kind %q", v.Name, d)
				}
			}
			switch v.DRSBehavior {
			case "", "fullyAutomated", "partiallyAutomated", "manual", "disabled":
			default:
				return fmt.Errorf("VM %s: unknown drs_behavior %q", v.Name, v.DRSBehavior)
			}
		}
		for _, r := range c.Rules {
			if r.Name == "" || len(r.VMs) == 0 || len(r.Hosts) == 0 {
				return fmt.Errorf("cluster %s: a rule needs a name, VMs and hosts", c.Name)
			}
			for _, vn := range r.VMs {
				if !vmNames[vn] {
					return fmt.Errorf("rule %s: VM %q is not a listed VM of cluster %s", r.Name, vn, c.Name)
				}
			}
			for _, h := range r.Hosts {
				if h < 0 || h >= c.Hosts {
					return fmt.Errorf("rule %s: host index %d out of range", r.Name, h)
				}
			}
		}
	}
	return nil
}

func hostName(cluster string, index int) string {
	return fmt.Sprintf("%s-esx%02d", cluster, index+1)
}

func vmName(cluster string, index int) string {
	return fmt.Sprintf("%s-vm%04d", cluster, index+1)
}
