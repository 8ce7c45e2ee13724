package main

// HA/DRS/DPM settings. The stock ReconfigureComputeResource_Task keeps rules, groups and
// per-VM overrides but drops dasConfig/drsConfig/dpmConfig; this merges them the way
// vCenter does with modify=true (only the properties that are set change) and replaces
// them with modify=false.

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

func mergeOptions(dst []types.BaseOptionValue, src []types.BaseOptionValue) []types.BaseOptionValue {
	out := append([]types.BaseOptionValue(nil), dst...)
	for _, o := range src {
		key := o.GetOptionValue().Key
		replaced := false
		for i := range out {
			if out[i].GetOptionValue().Key == key {
				out[i] = o
				replaced = true
			}
		}
		if !replaced {
			out = append(out, o)
		}
	}
	return out
}

func mergeDas(dst *types.ClusterDasConfigInfo, src *types.ClusterDasConfigInfo) {
	if src.Enabled != nil {
		dst.Enabled = src.Enabled
	}
	if src.VmMonitoring != "" {
		dst.VmMonitoring = src.VmMonitoring
	}
	if src.HostMonitoring != "" {
		dst.HostMonitoring = src.HostMonitoring
	}
	if src.VmComponentProtecting != "" {
		dst.VmComponentProtecting = src.VmComponentProtecting
	}
	if src.FailoverLevel != 0 {
		dst.FailoverLevel = src.FailoverLevel
	}
	if src.AdmissionControlPolicy != nil {
		dst.AdmissionControlPolicy = src.AdmissionControlPolicy
	}
	if src.AdmissionControlEnabled != nil {
		dst.AdmissionControlEnabled = src.AdmissionControlEnabled
	}
	if src.DefaultVmSettings != nil {
		dst.DefaultVmSettings = src.DefaultVmSettings
	}
	if len(src.Option) > 0 {
		dst.Option = mergeOptions(dst.Option, src.Option)
	}
	if src.HeartbeatDatastore != nil {
		dst.HeartbeatDatastore = src.HeartbeatDatastore
	}
	if src.HBDatastoreCandidatePolicy != "" {
		dst.HBDatastoreCandidatePolicy = src.HBDatastoreCandidatePolicy
	}
}

func mergeDrs(dst *types.ClusterDrsConfigInfo, src *types.ClusterDrsConfigInfo) {
	if src.Enabled != nil {
		dst.Enabled = src.Enabled
	}
	if src.EnableVmBehaviorOverrides != nil {
		dst.EnableVmBehaviorOverrides = src.EnableVmBehaviorOverrides
	}
	if src.DefaultVmBehavior != "" {
		dst.DefaultVmBehavior = src.DefaultVmBehavior
	}
	if src.VmotionRate != 0 {
		dst.VmotionRate = src.VmotionRate
	}
	if src.ScaleDescendantsShares != "" {
		dst.ScaleDescendantsShares = src.ScaleDescendantsShares
	}
	if len(src.Option) > 0 {
		dst.Option = mergeOptions(dst.Option, src.Option)
	}
}

func mergeDpm(dst *types.ClusterDpmConfigInfo, src *types.ClusterDpmConfigInfo) {
	if src.Enabled != nil {
		dst.Enabled = src.Enabled
	}
	if src.DefaultDpmBehavior != "" {
		dst.DefaultDpmBehavior = src.DefaultDpmBehavior
	}
	if src.HostPowerActionRate != 0 {
		dst.HostPowerActionRate = src.HostPowerActionRate
	}
	if len(src.Option) > 0 {
		dst.Option = mergeOptions(dst.Option, src.Option)
	}
}

func validDrsBehavior(b types.DrsBehavior) bool {
	switch b {
	case "", types.DrsBehaviorFullyAutomated, types.DrsBehaviorPartiallyAutomated, types.DrsBehaviorManual:
		return true
	}
	return false
}

// reconfigureCluster runs the stock method (rules, groups, overrides) and, when it
// succeeded, applies the HA/DRS/DPM part itself before the caller sees the task.
func (l *lab) reconfigureCluster(req *types.ReconfigureComputeResource_Task) (types.ManagedObjectReference, bool) {
	c, ok := simulator.Map.Get(req.This).(*simulator.ClusterComputeResource)
	if !ok {
		return types.ManagedObjectReference{}, false
	}
	spec, ok := req.Spec.(*types.ClusterConfigSpecEx)
	if !ok {
		return types.ManagedObjectReference{}, false
	}
	if spec.DrsConfig != nil && !validDrsBehavior(spec.DrsConfig.DefaultVmBehavior) {
		task := simulator.CreateTask(c, "reconfigureCluster", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return nil, &types.InvalidArgument{InvalidProperty: "drsConfig.defaultVmBehavior"}
		})
		return task.Run(), true
	}
	var res *methods.ReconfigureComputeResource_TaskBody
	simulator.Map.WithLock(c, func() {
		res = c.ReconfigureComputeResourceTask(req).(*methods.ReconfigureComputeResource_TaskBody)
	})
	taskRef := res.Res.Returnval
	task := simulator.Map.Get(taskRef).(*simulator.Task)
	if task.Info.State != types.TaskInfoStateSuccess {
		return taskRef, true
	}
	simulator.Map.WithLock(c, func() {
		cfg := c.ConfigurationEx.(*types.ClusterConfigInfoEx)
		das, drs, dpm := cfg.DasConfig, cfg.DrsConfig, cfg.DpmConfigInfo
		if !req.Modify {
			das, drs = types.ClusterDasConfigInfo{}, types.ClusterDrsConfigInfo{}
			dpm = nil
		}
		if spec.DasConfig != nil {
			mergeDas(&das, spec.DasConfig)
		}
		if spec.DrsConfig != nil {
			mergeDrs(&drs, spec.DrsConfig)
		}
		if spec.DpmConfig != nil {
			if dpm == nil {
				dpm = &types.ClusterDpmConfigInfo{}
			} else {
				cp := *dpm
				dpm = &cp
			}
			mergeDpm(dpm, spec.DpmConfig)
		}
		next := *cfg
		next.DasConfig, next.DrsConfig, next.DpmConfigInfo = das, drs, dpm
		simulator.Map.Update(c, []types.PropertyChange{{Name: "configurationEx", Val: &next}})
	})
	return taskRef, true
}
