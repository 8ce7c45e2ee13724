package main

// Inventory construction. Everything is created through the simulator's own API (an
// in-process vim25 client), then a few facts the stock model cannot express — per-host
// hardware identity, product build, passthrough devices, FT state, shared datastores — are
// set on the simulator's objects directly through its registry.

import (
	"context"
	"fmt"
	"os"
	"path"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// bmcFieldName is the host custom attribute holding the BMC (iDRAC) address, the way
// operators usually record it on ESXi hosts in vCenter.
const bmcFieldName = "BMC Address"

type hostInfo struct {
	ref      types.ManagedObjectReference
	name     string
	cluster  string
	localDS  types.ManagedObjectReference
	hardware HostHardware
}

type clusterInfo struct {
	ref      types.ManagedObjectReference
	spec     *ClusterSpec
	hosts    []types.ManagedObjectReference
	sharedDS types.ManagedObjectReference
}

type vmPlan struct {
	name     string
	host     int
	memoryMB int32
	cpus     int32
	powerOn  bool
	devices  []string
	drs      string
	noTools  bool
}

func newClient(ctx context.Context, m *simulator.Model) (*vim25.Client, error) {
	// The Service is a soap.RoundTripper, so this client talks to the simulator in-process.
	return vim25.NewClient(ctx, m.Service)
}

func (l *lab) build(ctx context.Context) error {
	c := l.client
	root := object.NewRootFolder(c)
	dc, err := root.CreateDatacenter(ctx, l.spec.Datacenter)
	if err != nil {
		return fmt.Errorf("create datacenter: %w", err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	fields := object.NewCustomFieldsManager(c)
	def, err := fields.Add(ctx, bmcFieldName, "HostSystem", nil, nil)
	if err != nil {
		return fmt.Errorf("create BMC custom attribute: %w", err)
	}
	l.bmcFieldKey = def.Key

	serial := 0
	for ci := range l.spec.Clusters {
		cs := &l.spec.Clusters[ci]
		cluster, err := folders.HostFolder.CreateCluster(ctx, cs.Name, types.ClusterConfigSpecEx{})
		if err != nil {
			return fmt.Errorf("create cluster %s: %w", cs.Name, err)
		}
		ci := &clusterInfo{ref: cluster.Reference(), spec: cs}
		l.clusters[cs.Name] = ci
		var hosts []*object.HostSystem
		for hi := 0; hi < cs.Hosts; hi++ {
			name := hostName(cs.Name, hi)
			task, err := cluster.AddHost(ctx, types.HostConnectSpec{HostName: name}, true, nil, nil)
			if err != nil {
				return err
			}
			res, err := task.WaitForResult(ctx, nil)
			if err != nil {
				return fmt.Errorf("add host %s: %w", name, err)
			}
			ref := res.Result.(types.ManagedObjectReference)
			hosts = append(hosts, object.NewHostSystem(c, ref))
			ci.hosts = append(ci.hosts, ref)
			serial++
			hw := l.spec.Hardware[name]
			if hw.ServiceTag == "" {
				// Dell service tags are 7 upper-case alphanumerics; keep the default in that shape.
				hw.ServiceTag = fmt.Sprintf("SIM%04d", serial)
			}
			h := &hostInfo{ref: ref, name: name, cluster: cs.Name, hardware: hw}
			l.hosts[name] = h
			l.hostByRef[ref] = h
		}
		// Shared storage: one datastore per cluster mounted on every host of the cluster.
		dir, err := l.tempDir(cs.Name + "-shared")
		if err != nil {
			return err
		}
		dss, err := hosts[0].ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		shared, err := dss.CreateLocalDatastore(ctx, cs.Name+"-shared", dir)
		if err != nil {
			return fmt.Errorf("create shared datastore: %w", err)
		}
		ci.sharedDS = shared.Reference()
		l.shareDatastore(ci.sharedDS, ci.hosts)
		for i, hs := range hosts {
			h := l.hostByRef[hs.Reference()]
			dir, err := l.tempDir(h.name + "-local")
			if err != nil {
				return err
			}
			dss, err := hs.ConfigManager().DatastoreSystem(ctx)
			if err != nil {
				return err
			}
			local, err := dss.CreateLocalDatastore(ctx, h.name+"-local", dir)
			if err != nil {
				return fmt.Errorf("create local datastore for %s: %w", h.name, err)
			}
			h.localDS = local.Reference()
			l.markDatastore(h.localDS, false)
			if err := l.configureHost(ctx, fields, h, cs, i); err != nil {
				return err
			}
		}
		if err := l.configureCluster(ctx, cluster, cs); err != nil {
			return err
		}
		if err := l.createVMs(ctx, folders, cluster, ci); err != nil {
			return err
		}
		if err := l.applyRules(ctx, cluster, ci); err != nil {
			return err
		}
	}
	return nil
}

func (l *lab) tempDir(name string) (string, error) {
	// TMPDIR is set by the launcher to its own work folder, so nothing is left in /tmp.
	dir, err := os.MkdirTemp("", "govcsim-"+name+"-")
	if err == nil {
		l.dirs = append(l.dirs, dir)
	}
	return dir, err
}

// shareDatastore mounts a datastore created on the first host on all the others. The stock
// CreateLocalDatastore called once per host would create one object per call instead.
func (l *lab) shareDatastore(ref types.ManagedObjectReference, hosts []types.ManagedObjectReference) {
	ds := simulator.Map.Get(ref).(*simulator.Datastore)
	for _, href := range hosts[1:] {
		host := simulator.Map.Get(href).(*simulator.HostSystem)
		dss := simulator.Map.Get(*host.ConfigManager.DatastoreSystem).(*simulator.HostDatastoreSystem)
		simulator.Map.WithLock(dss, func() { dss.Datastore = append(dss.Datastore, ref) })
		simulator.Map.WithLock(host, func() { host.Datastore = dss.Datastore })
		simulator.Map.WithLock(ds, func() {
			ds.Host = append(ds.Host, types.DatastoreHostMount{
				Key: href,
				MountInfo: types.HostMountInfo{
					AccessMode: string(types.HostMountModeReadWrite),
					Mounted:    types.NewBool(true),
					Accessible: types.NewBool(true),
				},
			})
		})
	}
	l.markDatastore(ref, true)
}

func (l *lab) markDatastore(ref types.ManagedObjectReference, shared bool) {
	ds := simulator.Map.Get(ref).(*simulator.Datastore)
	simulator.Map.WithLock(ds, func() {
		ds.Summary.Type = string(types.HostFileSystemVolumeFileSystemTypeVMFS)
		ds.Summary.MultipleHostAccess = types.NewBool(shared)
	})
}

func (l *lab) configureHost(ctx context.Context, fields *object.CustomFieldsManager, h *hostInfo, cs *ClusterSpec, index int) error {
	host := simulator.Map.Get(h.ref).(*simulator.HostSystem)
	mem := cs.HostMemoryMB * 1024 * 1024
	simulator.Map.WithLock(host, func() {
		// The stock template shares its product and hardware records between hosts:
		// give every host its own copies before changing them.
		product := esx.HostSystem.Summary.Config.Product
		p := *product
		p.Version = cs.Version
		p.Build = cs.Build
		p.FullName = fmt.Sprintf("VMware ESXi %s build-%s", cs.Version, cs.Build)
		host.Summary.Config.Product = &p
		cp := p
		host.Config.Product = cp
		hw := *host.Hardware
		hw.MemorySize = mem
		hw.SystemInfo.Vendor = "Dell Inc."
		hw.SystemInfo.Model = "PowerEdge R750"
		hw.SystemInfo.OtherIdentifyingInfo = []types.HostSystemIdentificationInfo{
			{IdentifierValue: h.hardware.ServiceTag, IdentifierType: &types.ElementDescription{
				Description: types.Description{Label: "Service tag", Summary: "Service tag of the system"},
				Key:         "ServiceTag",
			}},
		}
		host.Hardware = &hw
		sh := *host.Summary.Hardware
		sh.MemorySize = mem
		sh.Vendor = hw.SystemInfo.Vendor
		sh.Model = hw.SystemInfo.Model
		sh.OtherIdentifyingInfo = hw.SystemInfo.OtherIdentifyingInfo
		host.Summary.Hardware = &sh
	})
	if h.hardware.BMCAddress != "" {
		if err := fields.Set(ctx, h.ref, l.bmcFieldKey, h.hardware.BMCAddress); err != nil {
			return fmt.Errorf("set BMC address of %s: %w", h.name, err)
		}
	}
	for _, m := range cs.InMaintenance {
		if m == index {
			simulator.Map.WithLock(host, func() {
				simulator.Map.Update(host, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: true}})
			})
		}
	}
	return nil
}

func (l *lab) configureCluster(ctx context.Context, cluster *object.ClusterComputeResource, cs *ClusterSpec) error {
	cr := simulator.Map.Get(cluster.Reference()).(*simulator.ClusterComputeResource)
	simulator.Map.WithLock(cr, func() {
		cfg := cr.ConfigurationEx.(*types.ClusterConfigInfoEx)
		cfg.DasConfig = types.ClusterDasConfigInfo{
			Enabled:                 types.NewBool(cs.HA.Enabled),
			AdmissionControlEnabled: types.NewBool(cs.HA.AdmissionControl),
			HostMonitoring:          string(types.ClusterDasConfigInfoServiceStateEnabled),
			VmMonitoring:            string(types.ClusterDasConfigInfoVmMonitoringStateVmMonitoringDisabled),
			FailoverLevel:           cs.HA.FailoverLevel,
		}
		if cs.HA.FailoverLevel > 0 {
			cfg.DasConfig.AdmissionControlPolicy = &types.ClusterFailoverLevelAdmissionControlPolicy{
				FailoverLevel: cs.HA.FailoverLevel,
			}
		}
		cfg.DrsConfig = types.ClusterDrsConfigInfo{
			Enabled:                   types.NewBool(cs.DRS.Enabled),
			EnableVmBehaviorOverrides: types.NewBool(true),
			DefaultVmBehavior:         types.DrsBehavior(cs.DRS.Behavior),
			VmotionRate:               3,
		}
		configureVsan(cr, cs)
		// Capacity totals must follow the per-host memory set above.
		summary := cr.Summary.GetComputeResourceSummary()
		summary.TotalMemory = int64(cs.Hosts) * cs.HostMemoryMB * 1024 * 1024
		summary.EffectiveMemory = summary.TotalMemory / (1024 * 1024)
	})
	return nil
}

func (l *lab) plans(cs *ClusterSpec) []vmPlan {
	var plans []vmPlan
	n := 0
	for hi := 0; hi < cs.Hosts; hi++ {
		for i := 0; i < cs.VMsPerHost; i++ {
			plans = append(plans, vmPlan{
				name: vmName(cs.Name, n), host: hi, memoryMB: cs.VMMemoryMB, cpus: 2, powerOn: true,
			})
			n++
		}
	}
	for _, v := range cs.VMs {
		p := vmPlan{name: v.Name, host: v.Host, memoryMB: v.MemoryMB, cpus: v.CPUs, powerOn: true,
			devices: v.Devices, drs: v.DRSBehavior, noTools: v.Tools != nil && !*v.Tools}
		if v.PowerOn != nil {
			p.powerOn = *v.PowerOn
		}
		plans = append(plans, p)
	}
	return plans
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (l *lab) createVMs(ctx context.Context, folders *object.DatacenterFolders, cluster *object.ClusterComputeResource, ci *clusterInfo) error {
	pool, err := cluster.ResourcePool(ctx)
	if err != nil {
		return err
	}
	plans := l.plans(ci.spec)
	jobs := make(chan vmPlan)
	errs := make(chan error, len(plans))
	var wg sync.WaitGroup
	// A few workers: VM creation writes files, so it overlaps well with itself.
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				if err := l.createVM(ctx, folders, pool, ci, p); err != nil {
					errs <- fmt.Errorf("create VM %s: %w", p.name, err)
				}
			}
		}()
	}
	for _, p := range plans {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

func (l *lab) createVM(ctx context.Context, folders *object.DatacenterFolders, pool *object.ResourcePool, ci *clusterInfo, p vmPlan) error {
	hostRef := ci.hosts[p.host]
	h := l.hostByRef[hostRef]
	dsName := ci.spec.Name + "-shared"
	if has(p.devices, "local_disk") {
		dsName = h.name + "-local"
	}
	config := types.VirtualMachineConfigSpec{
		Name:     p.name,
		GuestId:  string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
		MemoryMB: int64(p.memoryMB),
		NumCPUs:  p.cpus,
		Files:    &types.VirtualMachineFileInfo{VmPathName: "[" + dsName + "]"},
	}
	var devices object.VirtualDeviceList
	scsi, _ := devices.CreateSCSIController("pvscsi")
	// The simulator gives every VM IDE controllers 200/201; put the CD-ROM on the first.
	ide := &types.VirtualIDEController{}
	ide.Key = 200
	cdrom, _ := devices.CreateCdrom(ide)
	// A CD-ROM is present on every VM, as on real templates, but not connected.
	cdrom.Backing = &types.VirtualCdromRemotePassthroughBackingInfo{
		VirtualDeviceRemoteDeviceBackingInfo: types.VirtualDeviceRemoteDeviceBackingInfo{UseAutoDetect: types.NewBool(false)},
	}
	cdrom.Connectable = &types.VirtualDeviceConnectInfo{AllowGuestControl: true}
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
		config.Files.VmPathName+" "+path.Join(p.name, "disk1.vmdk"))
	disk.CapacityInKB = 1024
	nic := esx.EthernetCard
	devices = append(devices, scsi, cdrom, disk, &nic)
	config.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	host := object.NewHostSystem(l.client, hostRef)
	task, err := folders.VmFolder.CreateVM(ctx, config, pool, host)
	if err != nil {
		return err
	}
	res, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	ref := res.Result.(types.ManagedObjectReference)
	l.mu.Lock()
	l.vms[p.name] = ref
	l.mu.Unlock()
	if err := l.addDevices(ref, ci, h, p.devices); err != nil {
		return err
	}
	setTools(ref, !p.noTools)
	if p.drs != "" {
		l.mu.Lock()
		l.drsOverrides = append(l.drsOverrides, drsOverride{cluster: ci.ref, vm: ref, behavior: p.drs})
		l.mu.Unlock()
	}
	if p.powerOn {
		vm := object.NewVirtualMachine(l.client, ref)
		t, err := vm.PowerOn(ctx)
		if err != nil {
			return err
		}
		if err := t.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// setTools records whether VMware Tools runs in the VM's guest (the simulator creates every VM
// with Tools not running, and still shuts any guest down; front.go refuses as vCenter does).
func setTools(ref types.ManagedObjectReference, running bool) {
	vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	simulator.Map.WithLock(vm, func() {
		if vm.Guest == nil {
			vm.Guest = &types.GuestInfo{}
		}
		if running {
			vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
			vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
		} else {
			vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
			vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsNotRunning
		}
	})
}

// addDevices gives a VM the blocker-relevant devices of its spec, editing the simulator's
// object directly: the stock ReconfigVM has no notion of host-side backings.
func (l *lab) addDevices(ref types.ManagedObjectReference, ci *clusterInfo, h *hostInfo, kinds []string) error {
	if len(kinds) == 0 {
		return nil
	}
	vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	var ftChange []types.PropertyChange
	simulator.Map.WithLock(vm, func() {
		devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
		var cdrom *types.VirtualCdrom
		if cds := devices.SelectByType((*types.VirtualCdrom)(nil)); len(cds) > 0 {
			cdrom = cds[0].(*types.VirtualCdrom)
		}
		connected := &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: true, AllowGuestControl: true}
		for _, kind := range kinds {
			switch kind {
			case "usb_passthrough":
				ctrl := &types.VirtualUSBXHCIController{}
				ctrl.Key = 14000
				ctrl.AutoConnectDevices = types.NewBool(true)
				ctrl.DeviceInfo = &types.Description{Label: "USB xHCI controller", Summary: "USB xHCI controller"}
				usb := &types.VirtualUSB{Connected: true, Vendor: 0x0781, Product: 0x5581}
				usb.Key = 4000
				usb.ControllerKey = ctrl.Key
				usb.Backing = &types.VirtualUSBUSBBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "path:1/0/3 version:2"},
				}
				usb.Connectable = connected
				usb.DeviceInfo = &types.Description{Label: "USB 1", Summary: "Host USB device: SanDisk Ultra"}
				ctrl.Device = []int32{usb.Key}
				devices = append(devices, ctrl, usb)
			case "cdrom_host_device":
				cdrom.Backing = &types.VirtualCdromAtapiBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "/vmfs/devices/cdrom/mpx.vmhba32:C0:T0:L0"},
				}
				cdrom.Connectable = connected
			case "cdrom_local_iso", "cdrom_shared_iso":
				ds := ci.sharedDS
				name := ci.spec.Name + "-shared"
				if kind == "cdrom_local_iso" {
					ds, name = h.localDS, h.name+"-local"
				}
				cdrom.Backing = &types.VirtualCdromIsoBackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
					FileName: "[" + name + "] iso/install.iso", Datastore: &ds,
				}}
				cdrom.Connectable = connected
			case "floppy_connected":
				fl := &types.VirtualFloppy{}
				fl.Key = 8000
				fl.Backing = &types.VirtualFloppyDeviceBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "/dev/fd0"},
				}
				fl.Connectable = connected
				fl.DeviceInfo = &types.Description{Label: "Floppy drive 1", Summary: "Host device /dev/fd0"}
				devices = append(devices, fl)
			case "vgpu":
				gpu := &types.VirtualPCIPassthrough{}
				gpu.Key = 13000
				gpu.Backing = &types.VirtualPCIPassthroughVmiopBackingInfo{Vgpu: "grid_t4-4q"}
				gpu.DeviceInfo = &types.Description{Label: "PCI device 0", Summary: "NVIDIA GRID vGPU grid_t4-4q"}
				devices = append(devices, gpu)
			case "pci_passthrough":
				pci := &types.VirtualPCIPassthrough{}
				pci.Key = 13001
				pci.Backing = &types.VirtualPCIPassthroughDeviceBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "Intel X710 10GbE"},
					Id:                             "0000:3b:00.0", DeviceId: "1572", SystemId: "5f3a-host",
					VendorId: -32634, // 0x8086 (Intel) in the API's signed 16-bit field
				}
				pci.DeviceInfo = &types.Description{Label: "PCI device 1", Summary: "DirectPath I/O 0000:3b:00.0"}
				devices = append(devices, pci)
			case "ft":
				ftChange = []types.PropertyChange{
					{Name: "runtime.faultToleranceState", Val: types.VirtualMachineFaultToleranceStateRunning},
					{Name: "summary.runtime.faultToleranceState", Val: types.VirtualMachineFaultToleranceStateRunning},
				}
			}
		}
		changes := []types.PropertyChange{{Name: "config.hardware.device", Val: []types.BaseVirtualDevice(devices)}}
		simulator.Map.Update(vm, append(changes, ftChange...))
	})
	return nil
}

type drsOverride struct {
	cluster  types.ManagedObjectReference
	vm       types.ManagedObjectReference
	behavior string
}

// applyRules creates the VM/host groups, affinity rules and per-VM DRS overrides through
// the stock ReconfigureComputeResource, which keeps those (unlike HA/DRS settings).
func (l *lab) applyRules(ctx context.Context, cluster *object.ClusterComputeResource, ci *clusterInfo) error {
	spec := types.ClusterConfigSpecEx{}
	for _, r := range ci.spec.Rules {
		vmGroup := &types.ClusterVmGroup{ClusterGroupInfo: types.ClusterGroupInfo{Name: r.Name + "-vms"}}
		for _, vn := range r.VMs {
			vmGroup.Vm = append(vmGroup.Vm, l.vms[vn])
		}
		hostGroup := &types.ClusterHostGroup{ClusterGroupInfo: types.ClusterGroupInfo{Name: r.Name + "-hosts"}}
		for _, hi := range r.Hosts {
			hostGroup.Host = append(hostGroup.Host, ci.hosts[hi])
		}
		spec.GroupSpec = append(spec.GroupSpec,
			types.ClusterGroupSpec{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd}, Info: vmGroup},
			types.ClusterGroupSpec{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd}, Info: hostGroup},
		)
		rule := &types.ClusterVmHostRuleInfo{
			ClusterRuleInfo: types.ClusterRuleInfo{Name: r.Name, Enabled: types.NewBool(true), Mandatory: types.NewBool(r.Mandatory)},
			VmGroupName:     vmGroup.Name,
		}
		if r.Anti {
			rule.AntiAffineHostGroupName = hostGroup.Name
		} else {
			rule.AffineHostGroupName = hostGroup.Name
		}
		spec.RulesSpec = append(spec.RulesSpec, types.ClusterRuleSpec{
			ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd}, Info: rule,
		})
	}
	for _, o := range l.drsOverrides {
		if o.cluster != ci.ref {
			continue
		}
		info := &types.ClusterDrsVmConfigInfo{Key: o.vm, Enabled: types.NewBool(o.behavior != "disabled")}
		if o.behavior != "disabled" {
			info.Behavior = types.DrsBehavior(o.behavior)
		}
		spec.DrsVmConfigSpec = append(spec.DrsVmConfigSpec, types.ClusterDrsVmConfigSpec{
			ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd}, Info: info,
		})
	}
	if len(spec.GroupSpec) == 0 && len(spec.DrsVmConfigSpec) == 0 {
		return nil
	}
	task, err := cluster.Reconfigure(ctx, &spec, true)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}
