// Command vcsim-lab is rackpilot's simulated vCenter: govmomi's simulator package plus the
// behaviour the executor relies on that the stock simulator lacks (DRS evacuation in
// maintenance mode, VMs that cannot move, persistent HA/DRS settings, consistent VM
// relocation, host reboots driven by the rest of the lab).
//
// On start it prints one JSON line {"url": ..., "control": ..., "hosts": N, "vms": N} and
// serves until SIGTERM/SIGINT, then removes its datastore folders.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

type lab struct {
	spec     *LabSpec
	model    *simulator.Model
	client   *vim25.Client
	dirs     []string
	clusters map[string]*clusterInfo
	hosts    map[string]*hostInfo
	// hostByRef and vms are filled during build and read-only afterwards, except vms
	// which build workers fill under mu.
	hostByRef    map[types.ManagedObjectReference]*hostInfo
	vms          map[string]types.ManagedObjectReference
	drsOverrides []drsOverride
	bmcFieldKey  int32

	mu       sync.Mutex
	entering map[types.ManagedObjectReference]*taskJob
	jobs     map[types.ManagedObjectReference]*taskJob
	bootGen  map[types.ManagedObjectReference]int
	reboots  map[types.ManagedObjectReference]int
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim-lab: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	configPath := flag.String("config", "", "JSON lab configuration file")
	clusters := flag.Int("clusters", 0, "number of clusters (without -config)")
	hosts := flag.Int("hosts", 4, "hosts per cluster (without -config)")
	vms := flag.Int("vms", 2, "VMs per host (without -config)")
	hwMap := flag.String("hardware-map", "", "JSON file: host name -> {service_tag, bmc_address}")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	certFile := flag.String("cert", "", "TLS certificate (PEM); required")
	keyFile := flag.String("key", "", "TLS private key (PEM); required")
	username := flag.String("username", "administrator@vsphere.local", "login user name")
	passwordFile := flag.String("password-file", "", "file holding the login password; required")
	migrateMS := flag.Int("migrate-ms", -1, "simulated vMotion time per VM in ms (overrides config)")
	flag.Parse()

	var spec *LabSpec
	var err error
	if *configPath != "" {
		if *clusters != 0 {
			fail("-clusters cannot be combined with -config")
		}
		if spec, err = loadSpec(*configPath); err != nil {
			fail("%v", err)
		}
	} else {
		if *clusters <= 0 {
			fail("give -config or -clusters N")
		}
		spec = uniformSpec(*clusters, *hosts, *vms)
	}
	if *migrateMS >= 0 {
		spec.MigrateMS = *migrateMS
	}
	if *hwMap != "" {
		hw, err := loadHardwareMap(*hwMap)
		if err != nil {
			fail("%v", err)
		}
		if spec.Hardware == nil {
			spec.Hardware = map[string]HostHardware{}
		}
		for k, v := range hw {
			spec.Hardware[k] = v
		}
	}
	if err := spec.applyDefaults(); err != nil {
		fail("%v", err)
	}
	if *certFile == "" || *keyFile == "" || *passwordFile == "" {
		fail("-cert, -key and -password-file are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fail("cannot load TLS key pair: %v", err)
	}
	pw, err := os.ReadFile(*passwordFile)
	if err != nil {
		fail("cannot read password file: %v", err)
	}
	password := string(trimNewline(pw))
	if password == "" {
		fail("password file is empty")
	}
	known := map[string]bool{}
	for _, cs := range spec.Clusters {
		for i := 0; i < cs.Hosts; i++ {
			known[hostName(cs.Name, i)] = true
		}
	}
	for name := range spec.Hardware {
		if !known[name] {
			fail("hardware map names unknown host %q", name)
		}
	}

	m := simulator.VPX()
	m.Datacenter = 0
	m.Cluster, m.ClusterHost, m.Host, m.Machine, m.Datastore = 0, 0, 0, 0, 0
	m.Portgroup, m.Pool, m.App, m.Pod, m.Folder = 0, 0, 0, 0, 0
	if err := m.Create(); err != nil {
		fail("create simulator: %v", err)
	}
	l := &lab{
		spec: spec, model: m,
		clusters: map[string]*clusterInfo{}, hosts: map[string]*hostInfo{},
		hostByRef: map[types.ManagedObjectReference]*hostInfo{}, vms: map[string]types.ManagedObjectReference{},
		entering: map[types.ManagedObjectReference]*taskJob{}, jobs: map[types.ManagedObjectReference]*taskJob{},
		bootGen: map[types.ManagedObjectReference]int{}, reboots: map[types.ManagedObjectReference]int{},
	}
	ctx := context.Background()
	started := time.Now()
	if l.client, err = newClient(ctx, m); err != nil {
		fail("in-process client: %v", err)
	}
	if err := l.build(ctx); err != nil {
		l.cleanup()
		fail("build inventory: %v", err)
	}
	buildTime := time.Since(started)

	// The simulator's own listener is only used to register its SDK handlers; the lab
	// serves clients from its front listener below.
	m.Service.TLS = nil
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*username, password)}
	inner := m.Service.NewServer()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		inner.Close()
		l.cleanup()
		fail("listen on %s: %v", *listen, err)
	}
	addr := ln.Addr().String()
	simulator.Map.SessionManager().ServiceHostName = addr
	srv := &http.Server{
		Handler:   l,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:  log.New(os.Stderr, "vcsim-lab http: ", 0),
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
			log.Printf("serve: %v", err)
		}
	}()

	nvms := len(l.vms)
	line, _ := json.Marshal(map[string]interface{}{
		"url": "https://" + addr + "/sdk", "control": "https://" + addr + "/lab",
		"hosts": len(l.hosts), "vms": nvms, "build_seconds": buildTime.Seconds(),
	})
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	shutdownCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	inner.Close()
	l.cleanup()
}

func (l *lab) cleanup() {
	l.model.Remove()
	for _, d := range l.dirs {
		_ = os.RemoveAll(d)
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
