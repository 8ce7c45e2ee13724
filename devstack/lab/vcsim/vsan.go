package main

// vSAN, as far as a rolling update sees it. govmomi's simulator has no vSAN at all, so the
// lab models what the executor reads, through the same API surface a real vCenter offers:
//
//   - the cluster's configurationEx.vsanConfigInfo.enabled (vim25, property collector);
//   - the vSAN health service on /vsanHealth (the vSAN Management SDK endpoint):
//     VsanVcClusterHealthSystem.VsanQueryVcClusterHealthSummary (moid
//     vsan-cluster-health-system) -> overallHealth and the failing groups/tests, and
//     VsanObjectSystem.QuerySyncingVsanObjectsSummary (moid vsan-cluster-object-system)
//     -> totalObjectsToSync, totalBytesToSync, totalRecoveryETA;
//   - EnterMaintenanceMode_Task's maintenanceSpec.vsanMode.objectAction, recorded per entry;
//   - the refusal vSAN makes with ensureObjectAccessibility when another host of the
//     cluster is already out (maintenance, entering it, or not responding) and objects are
//     still resyncing: some objects would then have no accessible copy left, so vCenter
//     fails the task with a VsanFault and the host stays in service. The entry is
//     recorded with refused: true; a rollout that waits for resync idle and takes one
//     vSAN host out at a time never provokes it. (noAction and evacuateAllData are not
//     refused here: the lab has no object placement to decide them on.)
//
// What is simulated, not computed: the health verdict and the resync backlog are lab state
// that tests set (POST /lab/clusters/<name>/vsan) and that a host leaving maintenance
// creates (resync_after_exit_ms: the components it missed are resynced, draining linearly,
// as vSAN does after a host returns). No objects, disks or placements exist.
//
//	GET  /lab/clusters/<name>/vsan   state plus the record: every maintenance entry (host,
//	                                 objectAction, objects still resyncing then, hosts out
//	                                 then, refused) and the most hosts out at once
//	POST /lab/clusters/<name>/vsan?health=green|yellow|red[&test=<failing test name>]
//	     [&resync_objects=N&resync_bytes=B&resync_seconds=S]  (S=0: stays until changed)

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type VSANSpec struct {
	Enabled bool `json:"enabled"`
	// ResyncAfterExitMS: after a host leaves maintenance, its missed components resync for
	// this long (0: no resync); ResyncObjects is the backlog that creates.
	ResyncAfterExitMS int `json:"resync_after_exit_ms"`
	ResyncObjects     int `json:"resync_objects"`
}

type vsanEntry struct {
	Host          string `json:"host"`
	ObjectAction  string `json:"object_action"`
	ResyncObjects int64  `json:"resync_objects"`
	HostsOut      int    `json:"hosts_out"`
	Health        string `json:"health"`
	Refused       bool   `json:"refused"`
}

type vsanState struct {
	name         string
	spec         VSANSpec
	health       string
	failingTest  string
	resyncObj    int64
	resyncBytes  int64
	resyncStart  time.Time
	resyncEnd    time.Time // zero: the backlog stays until changed
	entries      []vsanEntry
	maxOut       int
	hostsOutRefs map[types.ManagedObjectReference]bool
}

var (
	vsanMu     sync.Mutex
	vsanByRef  = map[types.ManagedObjectReference]*vsanState{}
	vsanByName = map[string]*vsanState{}
)

// configureVsan marks a cluster vSAN-enabled (vsanConfigInfo) and gives it its lab state.
func configureVsan(cr *simulator.ClusterComputeResource, cs *ClusterSpec) {
	if cs.VSAN == nil || !cs.VSAN.Enabled {
		return
	}
	cfg := cr.ConfigurationEx.(*types.ClusterConfigInfoEx)
	cfg.VsanConfigInfo = &types.VsanClusterConfigInfo{
		Enabled:       types.NewBool(true),
		DefaultConfig: &types.VsanClusterConfigInfoHostDefaultInfo{AutoClaimStorage: types.NewBool(false)},
	}
	st := &vsanState{name: cs.Name, spec: *cs.VSAN, health: "green", hostsOutRefs: map[types.ManagedObjectReference]bool{}}
	vsanMu.Lock()
	vsanByRef[cr.Self] = st
	vsanByName[cs.Name] = st
	vsanMu.Unlock()
}

// backlog is the resync still to do now (objects, bytes, seconds left); call under vsanMu.
func (s *vsanState) backlog(now time.Time) (int64, int64, int64) {
	if s.resyncObj <= 0 && s.resyncBytes <= 0 {
		return 0, 0, 0
	}
	if s.resyncEnd.IsZero() {
		return s.resyncObj, s.resyncBytes, -1
	}
	if !now.Before(s.resyncEnd) {
		s.resyncObj, s.resyncBytes = 0, 0
		return 0, 0, 0
	}
	left := float64(s.resyncEnd.Sub(now)) / float64(s.resyncEnd.Sub(s.resyncStart))
	return int64(math.Ceil(float64(s.resyncObj) * left)), int64(math.Ceil(float64(s.resyncBytes) * left)),
		int64(math.Ceil(s.resyncEnd.Sub(now).Seconds()))
}

func (s *vsanState) startResync(objects, bytes int64, d time.Duration) {
	s.resyncObj, s.resyncBytes = objects, bytes
	s.resyncStart = time.Now()
	s.resyncEnd = time.Time{}
	if d > 0 {
		s.resyncEnd = s.resyncStart.Add(d)
	}
}

func vsanOfHost(ref types.ManagedObjectReference) *vsanState {
	h := getHost(ref)
	if h == nil {
		return nil
	}
	c := hostCluster(h)
	if c == nil {
		return nil
	}
	vsanMu.Lock()
	defer vsanMu.Unlock()
	return vsanByRef[c.Self]
}

func (l *lab) hostsOut(c *simulator.ClusterComputeResource, also types.ManagedObjectReference) int {
	var hosts []types.ManagedObjectReference
	simulator.Map.WithLock(c, func() { hosts = append(hosts, c.Host...) })
	n := 0
	for _, ref := range hosts {
		hs := snapHost(ref)
		if ref == also || hs.maintenance || !hs.connected || l.isEntering(ref) {
			n++
		}
	}
	return n
}

// vsanEntering records a maintenance entry of a host of a vSAN cluster and returns the
// fault vSAN refuses it with, or nil.
func (l *lab) vsanEntering(ref types.ManagedObjectReference, spec *types.HostMaintenanceSpec) types.BaseMethodFault {
	st := vsanOfHost(ref)
	if st == nil {
		return nil
	}
	action := "ensureObjectAccessibility" // vCenter's default for a vSAN host
	if spec != nil && spec.VsanMode != nil && spec.VsanMode.ObjectAction != "" {
		action = spec.VsanMode.ObjectAction
	}
	out := l.hostsOut(hostCluster(getHost(ref)), ref)
	name := l.hostByRef[ref].name
	vsanMu.Lock()
	defer vsanMu.Unlock()
	obj, _, _ := st.backlog(time.Now())
	// out counts this host too: another one is out when it is above 1
	refused := action == "ensureObjectAccessibility" && out > 1 && obj > 0
	st.entries = append(st.entries, vsanEntry{Host: name, ObjectAction: action, ResyncObjects: obj, HostsOut: out,
		Health: st.health, Refused: refused})
	if refused {
		return &types.VsanFault{}
	}
	if out > st.maxOut {
		st.maxOut = out
	}
	return nil
}

// vsanExited starts the resync of what the host missed while it was out.
func (l *lab) vsanExited(ref types.ManagedObjectReference) {
	st := vsanOfHost(ref)
	if st == nil {
		return
	}
	vsanMu.Lock()
	defer vsanMu.Unlock()
	if st.spec.ResyncAfterExitMS > 0 {
		objs := int64(st.spec.ResyncObjects)
		if objs <= 0 {
			objs = 12
		}
		st.startResync(objs, objs*256<<20, time.Duration(st.spec.ResyncAfterExitMS)*time.Millisecond)
	}
}

func (l *lab) vsanView(st *vsanState) map[string]interface{} {
	obj, bytes, eta := st.backlog(time.Now())
	return map[string]interface{}{
		"cluster": st.name, "health": st.health, "failing_test": st.failingTest,
		"resync_objects": obj, "resync_bytes": bytes, "resync_eta_s": eta,
		"entries": append([]vsanEntry{}, st.entries...), "max_hosts_out": st.maxOut,
	}
}

func (l *lab) vsanControl(w http.ResponseWriter, r *http.Request, parts []string) {
	if len(parts) != 3 || parts[2] != "vsan" {
		writeError(w, http.StatusNotFound, "unknown cluster endpoint (use /lab/clusters/<name>/vsan)")
		return
	}
	vsanMu.Lock()
	st := vsanByName[parts[1]]
	vsanMu.Unlock()
	if st == nil {
		writeError(w, http.StatusNotFound, "no vSAN cluster of that name")
		return
	}
	if r.Method == http.MethodPost {
		q := r.URL.Query()
		vsanMu.Lock()
		if h := q.Get("health"); h != "" {
			if h != "green" && h != "yellow" && h != "red" {
				vsanMu.Unlock()
				writeError(w, http.StatusBadRequest, "health must be green, yellow or red")
				return
			}
			st.health, st.failingTest = h, q.Get("test")
		}
		if o := q.Get("resync_objects"); o != "" {
			objs, err1 := strconv.ParseInt(o, 10, 64)
			b, err2 := strconv.ParseInt(q.Get("resync_bytes"), 10, 64)
			s, err3 := strconv.ParseFloat(q.Get("resync_seconds"), 64)
			if err1 != nil || err2 != nil || err3 != nil || objs < 0 || b < 0 || s < 0 {
				vsanMu.Unlock()
				writeError(w, http.StatusBadRequest, "resync_objects, resync_bytes and resync_seconds must be non-negative numbers")
				return
			}
			st.startResync(objs, b, time.Duration(s*float64(time.Second)))
		}
		vsanMu.Unlock()
	} else if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "use GET or POST")
		return
	}
	vsanMu.Lock()
	v := l.vsanView(st)
	vsanMu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

var clusterArg = regexp.MustCompile(`<cluster[^>]*>([^<]+)</cluster>`)

// serveVsan answers the two vSAN Management SDK calls a rolling update makes; anything
// else on /vsanHealth is NotSupported.
func (l *lab) serveVsan(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil || r.Method != http.MethodPost {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !l.authenticated(r) {
		writeFault(w, "NotAuthenticated", "The session is not authenticated.")
		return
	}
	m := clusterArg.FindSubmatch(body)
	var st *vsanState
	if m != nil {
		vsanMu.Lock()
		st = vsanByRef[types.ManagedObjectReference{Type: "ClusterComputeResource", Value: strings.TrimSpace(string(m[1]))}]
		vsanMu.Unlock()
	}
	method := ""
	for _, name := range []string{"VsanQueryVcClusterHealthSummary", "QuerySyncingVsanObjectsSummary"} {
		if strings.Contains(string(body), "<"+name) {
			method = name
		}
	}
	if method == "" {
		writeFault(w, "NotSupported", "the lab's vSAN service answers VsanQueryVcClusterHealthSummary and QuerySyncingVsanObjectsSummary only")
		return
	}
	if st == nil {
		writeFault(w, "NotFound", "vSAN is not enabled on that cluster")
		return
	}
	vsanMu.Lock()
	obj, bytes, eta := st.backlog(time.Now())
	health, test := st.health, st.failingTest
	vsanMu.Unlock()
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	var ret string
	switch method {
	case "VsanQueryVcClusterHealthSummary":
		groups := `<groups><groupId>com.vmware.vsan.health.test.cluster</groupId><groupName>Cluster</groupName><groupHealth>green</groupHealth></groups>`
		if health != "green" {
			if test == "" {
				test = "vSAN object health"
			}
			groups = fmt.Sprintf(`<groups><groupId>com.vmware.vsan.health.test.data</groupId><groupName>Data</groupName>`+
				`<groupHealth>%s</groupHealth><groupTests><testId>com.vmware.vsan.health.test.objecthealth</testId>`+
				`<testName>%s</testName><testHealth>%s</testHealth></groupTests></groups>`, health, xmlEscape(test), health)
		}
		ret = fmt.Sprintf(`<overallHealth>%s</overallHealth><overallHealthDescription>%s</overallHealthDescription>%s`,
			health, xmlEscape(map[string]string{"green": "Healthy", "yellow": "Warning", "red": "Failed"}[health]), groups)
	case "QuerySyncingVsanObjectsSummary":
		if eta < 0 {
			eta = 0 // a backlog that is not draining has no ETA
		}
		ret = fmt.Sprintf(`<totalObjectsToSync>%d</totalObjectsToSync><totalBytesToSync>%d</totalBytesToSync>`+
			`<totalRecoveryETA>%d</totalRecoveryETA>`, obj, bytes, eta)
	}
	fmt.Fprintf(w, `%s<%sResponse xmlns="urn:vsan"><returnval>%s</returnval></%sResponse>%s`,
		envelopeHead, method, ret, method, envelopeTail)
}
