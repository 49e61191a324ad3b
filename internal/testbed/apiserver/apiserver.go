package apiserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/bindguard/bindguard/internal/testutils"
)

// BuildScript builds the binaries this package runs.
const BuildScript = "scripts/testbed/build-k8s.sh"

// startTimeout bounds how long a process may take to answer; it is a
// give-up limit for a wedged process, not a measurement.
const startTimeout = 90 * time.Second

// BinDir is where the build script puts kube-apiserver and etcd.
func BinDir() string {
	if d := os.Getenv("BINDGUARD_TESTBED_DIR"); d != "" {
		return filepath.Join(d, "bin")
	}
	return "/var/cache/bindguard/testbed/bin"
}

// Options adjust a test bed. The zero value is what most tests want.
type Options struct {
	// ExtraArgs are appended to kube-apiserver's command line.
	ExtraArgs []string
}

// Server is one running etcd and kube-apiserver.
type Server struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file holding Config, for a child process.
	Kubeconfig string
	// URL is the API server's https URL.
	URL string

	tb      testing.TB
	dir     string
	args    []string // without --secure-port and --cert-dir
	port    int
	mu      sync.Mutex
	etcd    *proc
	api     *proc
	peers   []*proc
	stopped bool
}

// Available reports why the binaries cannot be used, or "" when they can.
func Available() string {
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if st, err := os.Stat(filepath.Join(BinDir(), b)); err != nil || st.Mode()&0o111 == 0 {
			return fmt.Sprintf("no %s in %s: run %s", b, BinDir(), BuildScript)
		}
	}
	return ""
}

// Start runs etcd and kube-apiserver for tb and waits until /readyz is ok.
// Both are stopped, and their data removed, when tb ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if os.Getenv("BINDGUARD_SKIP_TESTBED") == "1" {
		// Set where the binaries cannot run, e.g. the kernel VMs of
		// scripts/vmtest.sh: these tests are about the API, not the kernel.
		tb.Skip("apiserver test bed: BINDGUARD_SKIP_TESTBED=1")
	}
	if why := Available(); why != "" {
		if os.Getenv("BINDGUARD_REQUIRE_PRIVILEGED") == "1" {
			tb.Fatalf("apiserver test bed: %s", why)
		}
		tb.Skipf("apiserver test bed: %s", why)
	}
	s := &Server{tb: tb, dir: tb.TempDir()}
	tb.Cleanup(s.close)
	etcdURL, err := s.startEtcd()
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.prepareAPIServer(etcdURL, opts); err != nil {
		tb.Fatal(err)
	}
	if err := s.startAPIServer(); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Client is an admin clientset.
func (s *Server) Client() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		s.tb.Fatalf("apiserver test bed: clientset: %v", err)
	}
	return c
}

// StopAPIServer stops kube-apiserver and leaves etcd running, so that
// RestartAPIServer brings the same cluster back on the same address.
func (s *Server) StopAPIServer() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api != nil {
		s.api.stop()
		s.api = nil
	}
}

// RestartAPIServer starts kube-apiserver again on the same port and waits
// until it is ready.
func (s *Server) RestartAPIServer() {
	s.tb.Helper()
	if err := s.startAPIServer(); err != nil {
		s.tb.Fatal(err)
	}
}

func (s *Server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api != nil {
		s.api.stop()
	}
	for _, p := range s.peers {
		p.stop()
	}
	if s.etcd != nil {
		s.etcd.stop()
	}
	s.stopped = true
}

func (s *Server) startEtcd() (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	p, err := startProc(s.dir, "etcd", filepath.Join(BinDir(), "etcd"),
		"--name", "testbed", "--data-dir", filepath.Join(s.dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "testbed="+peer, "--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return "", err
	}
	s.etcd = p
	if err := p.waitReady(http.DefaultClient, client+"/health"); err != nil {
		return "", err
	}
	return client, nil
}

// prepareAPIServer writes the service account key, the token file and the
// kubeconfig, and fixes the command line.
func (s *Server) prepareAPIServer(etcdURL string, opts Options) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("apiserver test bed: service account key: %w", err)
	}
	keyFile := filepath.Join(s.dir, "sa.key")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	tokenFile := filepath.Join(s.dir, "tokens.csv")
	if err := errors.Join(os.WriteFile(keyFile, pemKey, 0o600),
		os.WriteFile(tokenFile, []byte(token+",admin,admin,system:masters\n"), 0o600)); err != nil {
		return fmt.Errorf("apiserver test bed: %w", err)
	}
	s.port = ports[0]
	s.URL = "https://127.0.0.1:" + strconv.Itoa(s.port)
	s.args = append([]string{
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", keyFile, "--service-account-signing-key-file", keyFile,
		"--token-auth-file", tokenFile, "--authorization-mode", "RBAC",
		"--service-cluster-ip-range", "10.96.0.0/16", "--allow-privileged=true",
		"--disable-admission-plugins", "ServiceAccount",
	}, opts.ExtraArgs...)
	s.Config = &rest.Config{
		Host: s.URL, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(s.dir, "certs", "apiserver.crt")},
	}
	s.Kubeconfig = filepath.Join(s.dir, "admin.kubeconfig")
	return writeKubeconfig(s.Kubeconfig, s.Config)
}

func (s *Server) startAPIServer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("apiserver test bed: already closed")
	}
	p, err := s.runAPIServer("kube-apiserver", s.port, s.Config)
	if p != nil {
		s.api = p // stopped by close even when it never became ready
	}
	return err
}

// AddAPIServer starts one more kube-apiserver on the same etcd, as a second
// control-plane instance, and returns an admin configuration for it. It lets
// a test change objects while the first API server is stopped. It is
// stopped when the test ends.
func (s *Server) AddAPIServer() *rest.Config {
	s.tb.Helper()
	ports, err := freePorts(1)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := fmt.Sprintf("kube-apiserver-%d", len(s.peers)+2)
	cfg := rest.CopyConfig(s.Config)
	cfg.Host = "https://127.0.0.1:" + strconv.Itoa(ports[0])
	cfg.CAFile = filepath.Join(s.dir, name+"-certs", "apiserver.crt")
	p, err := s.runAPIServer(name, ports[0], cfg)
	if p != nil {
		s.peers = append(s.peers, p)
	}
	if err != nil {
		s.tb.Fatal(err)
	}
	return cfg
}

// runAPIServer starts one kube-apiserver and waits until cfg reaches it.
// Called with s.mu held.
func (s *Server) runAPIServer(name string, port int, cfg *rest.Config) (*proc, error) {
	args := append([]string{"--secure-port", strconv.Itoa(port), "--cert-dir", filepath.Dir(cfg.CAFile)}, s.args...)
	p, err := startProc(s.dir, name, filepath.Join(BinDir(), "kube-apiserver"), args...)
	if err != nil {
		return nil, err
	}
	// The serving certificate is written at start: probe without it first.
	hc, err := rest.HTTPClientFor(&rest.Config{
		Host: cfg.Host, BearerToken: cfg.BearerToken,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
	})
	if err == nil {
		err = p.waitReady(hc, cfg.Host+"/readyz")
	}
	if err == nil {
		if _, verr := kubernetes.NewForConfigOrDie(cfg).Discovery().ServerVersion(); verr != nil {
			err = fmt.Errorf("apiserver test bed: %s: server version with the admin config: %w", name, verr)
		}
	}
	return p, err
}

// writeKubeconfig writes cfg as a kubeconfig file with one context.
func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["testbed"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["testbed"] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "admin"}
	kc.CurrentContext = "testbed"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("apiserver test bed: kubeconfig: %w", err)
	}
	return nil
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("apiserver test bed: free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// proc is one child process with its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("apiserver test bed: %s log: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The process dies with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("apiserver test bed: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// waitReady polls url until it answers 200, the process exits or the start
// timeout passes.
func (p *proc) waitReady(hc *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("apiserver test bed: %s exited before it was ready (%v); its log:\n%s", p.name, p.err, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("apiserver test bed: %s not ready at %s after %s; its log:\n%s", p.name, url, startTimeout, p.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, then SIGKILL if the process lingers.
func (p *proc) stop() {
	testutils.Terminate(p.cmd.Process, p.done, 15*time.Second)
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
