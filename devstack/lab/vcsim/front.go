package main

// The HTTP front of the lab. SOAP calls whose stock behaviour differs from vCenter in ways
// the executor depends on are intercepted here, before the simulator's handler; all other
// requests go to the simulator untouched. (Overriding the objects in the simulator's
// registry instead panics for clusters and hosts in govmomi 0.24.2.)

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// intercepted lists the SOAP methods the lab implements itself. A cheap byte scan of the
// request for these element names keeps the common path (property reads) parse-free.
var intercepted = []string{
	"EnterMaintenanceMode_Task", "ExitMaintenanceMode_Task", "ReconfigureComputeResource_Task",
	"RelocateVM_Task", "MigrateVM_Task", "PowerOnVM_Task", "CancelTask", "ShutdownGuest",
}

const envelopeHead = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" ` +
	`xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ` +
	`xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">` +
	`<soapenv:Body>`
const envelopeTail = `</soapenv:Body></soapenv:Envelope>`

func xmlEscape(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func writeTaskResponse(w http.ResponseWriter, method string, task types.ManagedObjectReference) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `%s<%sResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></%sResponse>%s`,
		envelopeHead, method, xmlEscape(task.Value), method, envelopeTail)
}

func writeEmptyResponse(w http.ResponseWriter, method string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `%s<%sResponse xmlns="urn:vim25"></%sResponse>%s`, envelopeHead, method, method, envelopeTail)
}

// writeFault sends a SOAP fault whose detail names a vim fault type without extra fields.
func writeFault(w http.ResponseWriter, faultType, msg string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `%s<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring>`+
		`<detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault></detail></soapenv:Fault>%s`,
		envelopeHead, xmlEscape(msg), faultType, faultType, faultType, envelopeTail)
}

func (l *lab) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/lab/"):
		l.control(w, r)
	case r.URL.Path == "/sdk" && r.Method == http.MethodPost:
		l.serveSDK(w, r)
	case r.URL.Path == "/vsanHealth":
		l.serveVsan(w, r)
	default:
		l.model.Service.ServeMux.ServeHTTP(w, r)
	}
}

// authenticated asks the simulator itself whether the request's session cookie is valid,
// by replaying it with a call that needs a session (CurrentTime).
func (l *lab) authenticated(r *http.Request) bool {
	probe := envelopeHead + `<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>` + envelopeTail
	req := httptest.NewRequest(http.MethodPost, "/sdk", strings.NewReader(probe))
	for _, c := range r.Cookies() {
		req.AddCookie(c)
	}
	req.Header.Set("User-Agent", r.UserAgent())
	req.RemoteAddr = r.RemoteAddr
	rec := httptest.NewRecorder()
	l.model.Service.ServeSDK(rec, req)
	return rec.Code == http.StatusOK
}

func (l *lab) serveSDK(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	hit := false
	for _, name := range intercepted {
		if bytes.Contains(body, []byte("<"+name)) {
			hit = true
			break
		}
	}
	if hit && l.handle(w, r, body) {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	l.model.Service.ServeSDK(w, r)
}

// handle serves an intercepted call and reports whether it did; when it did not (unknown
// object, no session, malformed body) the simulator answers with its own fault.
func (l *lab) handle(w http.ResponseWriter, r *http.Request, body []byte) bool {
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil || !l.authenticated(r) {
		return false
	}
	switch req := method.Body.(type) {
	case *types.EnterMaintenanceMode_Task:
		if getHost(req.This) == nil {
			return false
		}
		job := &taskJob{cancel: make(chan struct{}), done: make(chan struct{})}
		host := getHost(req.This)
		evacuateOff := req.EvacuatePoweredOffVms != nil && *req.EvacuatePoweredOffVms
		refusal := l.vsanEntering(req.This, req.MaintenanceSpec)
		task := simulator.CreateTask(host, "enterMaintenanceMode", func(t *simulator.Task) (types.AnyType, types.BaseMethodFault) {
			if refusal != nil {
				return nil, refusal // vSAN's pre-check: the task fails, nothing moves
			}
			return l.enterMaintenance(t, job, req.This, req.Timeout, evacuateOff)
		})
		l.startAsync(task, job)
		writeTaskResponse(w, method.Name, task.Self)
	case *types.ExitMaintenanceMode_Task:
		host := getHost(req.This)
		if host == nil {
			return false
		}
		task := simulator.CreateTask(host, "exitMaintenanceMode", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return l.exitMaintenance(req.This)
		})
		writeTaskResponse(w, method.Name, task.Run())
	case *types.ReconfigureComputeResource_Task:
		ref, ok := l.reconfigureCluster(req)
		if !ok {
			return false
		}
		writeTaskResponse(w, method.Name, ref)
	case *types.RelocateVM_Task:
		vm := getVM(req.This)
		if vm == nil {
			return false
		}
		task := simulator.CreateTask(vm, "relocateVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return l.relocate(req.This, req.Spec.Host, req.Spec.Pool)
		})
		l.startAsync(task, nil)
		writeTaskResponse(w, method.Name, task.Self)
	case *types.MigrateVM_Task:
		vm := getVM(req.This)
		if vm == nil {
			return false
		}
		task := simulator.CreateTask(vm, "migrateVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return l.relocate(req.This, req.Host, req.Pool)
		})
		l.startAsync(task, nil)
		writeTaskResponse(w, method.Name, task.Self)
	case *types.PowerOnVM_Task:
		// A host in maintenance mode or not responding cannot power VMs on; otherwise the
		// stock implementation is right.
		v, ok := snapVM(req.This)
		if !ok || v.host.Value == "" {
			return false
		}
		hs := snapHost(v.host)
		if hs.connected && !hs.maintenance {
			return false
		}
		var fault types.BaseMethodFault = &types.InvalidState{}
		if !hs.connected {
			fault = &types.HostNotConnected{}
		}
		task := simulator.CreateTask(getVM(req.This), "powerOn", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return nil, fault
		})
		writeTaskResponse(w, method.Name, task.Run())
	case *types.ShutdownGuest:
		// vCenter asks the guest through VMware Tools, and refuses a running VM without
		// them; the stock simulator powers any VM off at once.
		vm := getVM(req.This)
		if vm == nil {
			return false
		}
		var on, tools bool
		simulator.Map.WithLock(vm, func() {
			on = vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
			tools = vm.Guest != nil &&
				vm.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		})
		if !on || tools {
			return false // the stock answer: InvalidPowerState when off, else the VM goes off
		}
		writeFault(w, "ToolsUnavailable", "Cannot complete operation because VMware Tools is not running in this virtual machine.")
	case *types.CancelTask:
		t, ok := simulator.Map.Get(req.This).(*simulator.Task)
		if !ok {
			return false
		}
		l.mu.Lock()
		job := l.jobs[req.This]
		l.mu.Unlock()
		var state types.TaskInfoState
		simulator.Map.WithLock(t, func() { state = t.Info.State })
		switch {
		case state == types.TaskInfoStateSuccess || state == types.TaskInfoStateError:
			writeFault(w, "InvalidState", "task already completed")
		case job == nil || job.cancel == nil:
			writeFault(w, "NotSupported", "task is not cancelable")
		default:
			l.mu.Lock()
			select {
			case <-job.cancel:
			default:
				close(job.cancel)
			}
			l.mu.Unlock()
			writeEmptyResponse(w, method.Name)
		}
	default:
		return false
	}
	return true
}

// startAsync runs a task in the background, as vCenter does; the stock simulator runs
// every task to completion inside the request.
func (l *lab) startAsync(task *simulator.Task, job *taskJob) {
	if job == nil {
		job = &taskJob{done: make(chan struct{})}
	}
	l.mu.Lock()
	l.jobs[task.Self] = job
	l.mu.Unlock()
	go func() {
		task.Run()
		close(job.done)
		l.mu.Lock()
		delete(l.jobs, task.Self)
		l.mu.Unlock()
	}()
}
