package main

// Maintenance mode and VM mobility. The stock simulator flips inMaintenanceMode at once;
// a real vCenter with DRS fully automated first migrates the host's powered-on VMs and
// keeps the task running while any VM cannot move, until the caller's timeout.

import (
	"fmt"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// pollInterval is how often a stuck evacuation re-evaluates its VMs: operators resolve
// blockers (disconnect a CD-ROM, power a VM off) while the task is still running.
const pollInterval = 50 * time.Millisecond

type taskJob struct {
	cancel chan struct{}
	done   chan struct{}
}

func getHost(ref types.ManagedObjectReference) *simulator.HostSystem {
	h, _ := simulator.Map.Get(ref).(*simulator.HostSystem)
	return h
}

func getVM(ref types.ManagedObjectReference) *simulator.VirtualMachine {
	v, _ := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	return v
}

func hostCluster(h *simulator.HostSystem) *simulator.ClusterComputeResource {
	if h.Parent == nil {
		return nil
	}
	c, _ := simulator.Map.Get(*h.Parent).(*simulator.ClusterComputeResource)
	return c
}

// snapshot types: values read under each object's lock, so decisions never race edits.
type hostSnap struct {
	ref         types.ManagedObjectReference
	connected   bool
	maintenance bool
	memory      int64
	vms         []types.ManagedObjectReference
	datastores  []types.ManagedObjectReference
}

type vmSnap struct {
	ref        types.ManagedObjectReference
	name       string
	poweredOn  bool
	memory     int64
	devices    object.VirtualDeviceList
	ft         bool
	datastores []types.ManagedObjectReference
	host       types.ManagedObjectReference
}

func snapHost(ref types.ManagedObjectReference) hostSnap {
	h := getHost(ref)
	var s hostSnap
	simulator.Map.WithLock(h, func() {
		s = hostSnap{
			ref:         ref,
			connected:   h.Runtime.ConnectionState == types.HostSystemConnectionStateConnected,
			maintenance: h.Runtime.InMaintenanceMode,
			memory:      h.Summary.Hardware.MemorySize,
			vms:         append([]types.ManagedObjectReference(nil), h.Vm...),
			datastores:  append([]types.ManagedObjectReference(nil), h.Datastore...),
		}
	})
	return s
}

func snapVM(ref types.ManagedObjectReference) (vmSnap, bool) {
	vm := getVM(ref)
	if vm == nil {
		return vmSnap{}, false
	}
	var s vmSnap
	simulator.Map.WithLock(vm, func() {
		s = vmSnap{
			ref:        ref,
			name:       vm.Name,
			poweredOn:  vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn,
			memory:     int64(vm.Config.Hardware.MemoryMB) * 1024 * 1024,
			devices:    append(object.VirtualDeviceList(nil), vm.Config.Hardware.Device...),
			ft:         vm.Runtime.FaultToleranceState != "" && vm.Runtime.FaultToleranceState != types.VirtualMachineFaultToleranceStateNotConfigured,
			datastores: append([]types.ManagedObjectReference(nil), vm.Datastore...),
		}
		if vm.Runtime.Host != nil {
			s.host = *vm.Runtime.Host
		}
	})
	return s, true
}

func contains(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) bool {
	for _, r := range refs {
		if r == ref {
			return true
		}
	}
	return false
}

// pinned reports why a VM cannot leave its host whatever the destination, or "".
func pinned(vm vmSnap) string {
	if vm.ft {
		return "fault tolerance"
	}
	for _, d := range vm.devices {
		switch dev := d.(type) {
		case *types.VirtualUSB:
			if _, ok := dev.Backing.(*types.VirtualUSBUSBBackingInfo); ok {
				return "USB passthrough"
			}
		case *types.VirtualPCIPassthrough:
			return "PCI/vGPU passthrough"
		case *types.VirtualCdrom:
			if dev.Connectable != nil && dev.Connectable.Connected {
				switch dev.Backing.(type) {
				case *types.VirtualCdromAtapiBackingInfo, *types.VirtualCdromPassthroughBackingInfo:
					return "CD-ROM connected to a host device"
				case *types.VirtualCdromRemoteAtapiBackingInfo, *types.VirtualCdromRemotePassthroughBackingInfo:
					return "CD-ROM connected to a client device"
				}
			}
		case *types.VirtualFloppy:
			if dev.Connectable != nil && dev.Connectable.Connected {
				switch dev.Backing.(type) {
				case *types.VirtualFloppyDeviceBackingInfo, *types.VirtualFloppyRemoteDeviceBackingInfo:
					return "floppy connected to a device"
				}
			}
		}
	}
	return ""
}

// fileDatastores lists datastores a VM's connected ISO/floppy images live on.
func fileDatastores(vm vmSnap) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, d := range vm.devices {
		dev := d.GetVirtualDevice()
		if dev.Connectable == nil || !dev.Connectable.Connected {
			continue
		}
		if b, ok := dev.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			info := b.GetVirtualDeviceFileBackingInfo()
			if info.Datastore != nil {
				out = append(out, *info.Datastore)
			}
		}
	}
	return out
}

type ruleCheck func(vm types.ManagedObjectReference, dst types.ManagedObjectReference) bool

// affinityCheck returns a predicate honouring mandatory VM-host rules and per-VM DRS
// overrides of a cluster: DRS never moves a VM against a "must" rule or one set to manual.
func affinityCheck(c *simulator.ClusterComputeResource) (ruleCheck, func(types.ManagedObjectReference) bool) {
	var groups map[string][]types.ManagedObjectReference
	var rules []*types.ClusterVmHostRuleInfo
	manual := map[types.ManagedObjectReference]bool{}
	simulator.Map.WithLock(c, func() {
		cfg := c.ConfigurationEx.(*types.ClusterConfigInfoEx)
		groups = map[string][]types.ManagedObjectReference{}
		for _, g := range cfg.Group {
			switch x := g.(type) {
			case *types.ClusterVmGroup:
				groups[x.Name] = append([]types.ManagedObjectReference(nil), x.Vm...)
			case *types.ClusterHostGroup:
				groups[x.Name] = append([]types.ManagedObjectReference(nil), x.Host...)
			}
		}
		for _, r := range cfg.Rule {
			if x, ok := r.(*types.ClusterVmHostRuleInfo); ok {
				if x.Enabled != nil && *x.Enabled && x.Mandatory != nil && *x.Mandatory {
					cp := *x
					rules = append(rules, &cp)
				}
			}
		}
		for _, o := range cfg.DrsVmConfig {
			if (o.Enabled != nil && !*o.Enabled) || (o.Behavior != "" && o.Behavior != types.DrsBehaviorFullyAutomated) {
				manual[o.Key] = true
			}
		}
	})
	allowed := func(vm, dst types.ManagedObjectReference) bool {
		for _, r := range rules {
			if !contains(groups[r.VmGroupName], vm) {
				continue
			}
			if r.AffineHostGroupName != "" && !contains(groups[r.AffineHostGroupName], dst) {
				return false
			}
			if r.AntiAffineHostGroupName != "" && contains(groups[r.AntiAffineHostGroupName], dst) {
				return false
			}
		}
		return true
	}
	return allowed, func(vm types.ManagedObjectReference) bool { return manual[vm] }
}

func drsFullyAutomated(c *simulator.ClusterComputeResource) bool {
	if c == nil {
		return false
	}
	ok := false
	simulator.Map.WithLock(c, func() {
		cfg := c.ConfigurationEx.(*types.ClusterConfigInfoEx)
		ok = cfg.DrsConfig.Enabled != nil && *cfg.DrsConfig.Enabled &&
			(cfg.DrsConfig.DefaultVmBehavior == "" || cfg.DrsConfig.DefaultVmBehavior == types.DrsBehaviorFullyAutomated)
	})
	return ok
}

func usedMemory(h hostSnap) int64 {
	var used int64
	for _, ref := range h.vms {
		if v, ok := snapVM(ref); ok && v.poweredOn {
			used += v.memory
		}
	}
	return used
}

// pickDestination chooses the active host with the most free memory that the VM may run on.
func (l *lab) pickDestination(vm vmSnap, src types.ManagedObjectReference, c *simulator.ClusterComputeResource,
	allowed ruleCheck) (types.ManagedObjectReference, string) {
	var hosts []types.ManagedObjectReference
	simulator.Map.WithLock(c, func() { hosts = append(hosts, c.Host...) })
	need := append(append([]types.ManagedObjectReference(nil), vm.datastores...), fileDatastores(vm)...)
	best := types.ManagedObjectReference{}
	var bestFree int64 = -1
	reason := "no other active host in the cluster"
	for _, ref := range hosts {
		if ref == src || l.isEntering(ref) {
			continue
		}
		h := snapHost(ref)
		if !h.connected || h.maintenance {
			continue
		}
		storageOK := true
		for _, ds := range need {
			if !contains(h.datastores, ds) {
				storageOK = false
			}
		}
		if !storageOK {
			reason = "storage is local to its host"
			continue
		}
		if !allowed(vm.ref, ref) {
			reason = "a mandatory VM-host rule pins it"
			continue
		}
		free := h.memory - usedMemory(h)
		if free < vm.memory {
			reason = "no host has enough free memory"
			continue
		}
		if free > bestFree {
			best, bestFree = ref, free
		}
	}
	if bestFree < 0 {
		return best, reason
	}
	return best, ""
}

// moveVM re-homes a VM, keeping both hosts' VM lists and the VM's runtime in step (the
// stock RelocateVM_Task leaves the VM listed under its old host).
func moveVM(ref, dst types.ManagedObjectReference, pool *types.ManagedObjectReference) {
	vm := getVM(ref)
	var src types.ManagedObjectReference
	simulator.Map.WithLock(vm, func() {
		if vm.Runtime.Host != nil {
			src = *vm.Runtime.Host
		}
		d := dst
		changes := []types.PropertyChange{
			{Name: "runtime.host", Val: &d},
			{Name: "summary.runtime.host", Val: &d},
		}
		if pool != nil {
			p := *pool
			changes = append(changes, types.PropertyChange{Name: "resourcePool", Val: &p})
		}
		simulator.Map.Update(vm, changes)
	})
	if src == dst {
		return
	}
	if h := getHost(src); h != nil {
		simulator.Map.WithLock(h, func() {
			vms := append([]types.ManagedObjectReference(nil), h.Vm...)
			simulator.RemoveReference(&vms, ref)
			simulator.Map.Update(h, []types.PropertyChange{{Name: "vm", Val: vms}})
		})
	}
	h := getHost(dst)
	simulator.Map.WithLock(h, func() {
		if !contains(h.Vm, ref) {
			vms := append(append([]types.ManagedObjectReference(nil), h.Vm...), ref)
			simulator.Map.Update(h, []types.PropertyChange{{Name: "vm", Val: vms}})
		}
	})
}

func (l *lab) migrationDelay(vm vmSnap) time.Duration {
	ms := l.spec.MigrateMS + int(float64(l.spec.MigrateMSPerGB)*float64(vm.memory)/float64(1<<30))
	return time.Duration(ms) * time.Millisecond
}

func (l *lab) isEntering(ref types.ManagedObjectReference) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.entering[ref]
	return ok
}

func setProgress(t *simulator.Task, p int32) {
	simulator.Map.WithLock(t, func() {
		simulator.Map.Update(t, []types.PropertyChange{{Name: "info.progress", Val: p}})
	})
}

// admissionAllows applies HA admission control the way vCenter does for maintenance mode:
// a host may only leave if the hosts that stay can still tolerate the configured number
// of host failures for the cluster's powered-on VMs.
func (l *lab) admissionAllows(c *simulator.ClusterComputeResource, leaving types.ManagedObjectReference) bool {
	var enabled bool
	var level int32
	var hosts []types.ManagedObjectReference
	simulator.Map.WithLock(c, func() {
		cfg := c.ConfigurationEx.(*types.ClusterConfigInfoEx)
		das := cfg.DasConfig
		enabled = das.Enabled != nil && *das.Enabled && das.AdmissionControlEnabled != nil && *das.AdmissionControlEnabled
		level = das.FailoverLevel
		if p, ok := das.AdmissionControlPolicy.(*types.ClusterFailoverLevelAdmissionControlPolicy); ok {
			level = p.FailoverLevel
		}
		hosts = append(hosts, c.Host...)
	})
	if !enabled || level <= 0 {
		return true
	}
	var mems []int64
	var demand int64
	for _, ref := range hosts {
		h := snapHost(ref)
		demand += usedMemory(h)
		if ref == leaving || !h.connected || h.maintenance || l.isEntering(ref) {
			continue
		}
		mems = append(mems, h.memory)
	}
	if int32(len(mems)) <= level {
		return false
	}
	// Remove the `level` largest hosts: what is left must hold every powered-on VM.
	for i := int32(0); i < level; i++ {
		maxI := 0
		for j := range mems {
			if mems[j] > mems[maxI] {
				maxI = j
			}
		}
		mems = append(mems[:maxI], mems[maxI+1:]...)
	}
	var capacity int64
	for _, m := range mems {
		capacity += m
	}
	return capacity >= demand
}

// enterMaintenance runs inside an asynchronous task.
func (l *lab) enterMaintenance(t *simulator.Task, job *taskJob, ref types.ManagedObjectReference,
	timeout int32, evacuateOff bool) (types.AnyType, types.BaseMethodFault) {
	host := getHost(ref)
	hs := snapHost(ref)
	if !hs.connected {
		return nil, &types.HostNotConnected{}
	}
	if hs.maintenance {
		return nil, nil
	}
	c := hostCluster(host)
	l.mu.Lock()
	if _, busy := l.entering[ref]; busy {
		l.mu.Unlock()
		return nil, &types.InvalidState{}
	}
	l.entering[ref] = job
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.entering, ref)
		l.mu.Unlock()
	}()

	toMove := func() []vmSnap {
		var out []vmSnap
		for _, vref := range snapHost(ref).vms {
			v, ok := snapVM(vref)
			if ok && (v.poweredOn || evacuateOff) {
				out = append(out, v)
			}
		}
		return out
	}
	initial := toMove()
	anyOn := false
	for _, v := range initial {
		anyOn = anyOn || v.poweredOn
	}
	if anyOn && !drsFullyAutomated(c) {
		// Without DRS nothing would ever move the VMs: fail instead of waiting forever.
		return nil, &types.InvalidState{}
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(time.Duration(timeout) * time.Second)
	}
	total := len(initial)
	moved := 0
	setProgress(t, 1)
	for {
		remaining := toMove()
		admitted := c == nil || l.admissionAllows(c, ref)
		if len(remaining) == 0 && admitted {
			simulator.Map.WithLock(host, func() {
				simulator.Map.Update(host, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: true}})
			})
			return nil, nil
		}
		progressed := false
		if admitted && c != nil {
			allowed, manual := affinityCheck(c)
			for _, v := range remaining {
				if manual(v.ref) || (v.poweredOn && pinned(v) != "") {
					continue
				}
				dst, _ := l.pickDestination(v, ref, c, allowed)
				if dst.Value == "" {
					continue
				}
				select {
				case <-job.cancel:
					return nil, &types.RequestCanceled{}
				case <-time.After(l.migrationDelay(v)):
				}
				if cur, ok := snapVM(v.ref); !ok || cur.host != ref {
					continue // moved or removed meanwhile
				}
				// Another evacuation may have filled the chosen host during the vMotion time.
				if dst, _ = l.pickDestination(v, ref, c, allowed); dst.Value == "" {
					continue
				}
				moveVM(v.ref, dst, nil)
				moved++
				progressed = true
				if total > 0 {
					p := int32(1 + 98*moved/total)
					if p > 99 {
						p = 99
					}
					setProgress(t, p)
				}
				break // re-evaluate: capacity changed
			}
		}
		if !snapHost(ref).connected {
			return nil, &types.HostNotConnected{}
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return nil, &types.Timedout{}
		}
		if !progressed {
			select {
			case <-job.cancel:
				return nil, &types.RequestCanceled{}
			case <-time.After(pollInterval):
			}
		}
	}
}

func (l *lab) exitMaintenance(ref types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
	host := getHost(ref)
	if !snapHost(ref).connected {
		return nil, &types.HostNotConnected{}
	}
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: false}})
	})
	l.vsanExited(ref)
	return nil, nil
}

// relocate implements RelocateVM_Task/MigrateVM_Task for a host change (vMotion).
func (l *lab) relocate(vmRef types.ManagedObjectReference, dst *types.ManagedObjectReference,
	pool *types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
	v, ok := snapVM(vmRef)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: vmRef}
	}
	if dst == nil {
		if pool != nil {
			moveVM(vmRef, v.host, pool)
		}
		return nil, nil
	}
	h := getHost(*dst)
	if h == nil {
		return nil, &types.InvalidArgument{InvalidProperty: "host"}
	}
	hs := snapHost(*dst)
	if !hs.connected {
		return nil, &types.HostNotConnected{}
	}
	if hs.maintenance {
		return nil, &types.InvalidState{}
	}
	if v.poweredOn {
		if why := pinned(v); why != "" {
			return nil, &types.MigrationFault{}
		}
	}
	for _, ds := range append(append([]types.ManagedObjectReference(nil), v.datastores...), fileDatastores(v)...) {
		if !contains(hs.datastores, ds) {
			return nil, &types.InvalidArgument{InvalidProperty: "host: datastore not accessible"}
		}
	}
	time.Sleep(l.migrationDelay(v))
	moveVM(vmRef, *dst, pool)
	return nil, nil
}

func describeFault(f types.BaseMethodFault) string {
	return fmt.Sprintf("%T", f)
}
