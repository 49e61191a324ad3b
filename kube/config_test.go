package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "SERVER", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(kubeconfigTmpl, "SERVER", server)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClientConfig checks the order: --kubeconfig, then KUBECONFIG, then
// in-cluster, and never ~/.kube/config.
func TestClientConfig(t *testing.T) {
	flag := writeKubeconfig(t, "https://flag.example:6443")
	env := writeKubeconfig(t, "https://env.example:6443")
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"),
		[]byte(strings.ReplaceAll(kubeconfigTmpl, "SERVER", "https://home.example:6443")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for _, tc := range []struct {
		name, flag, env, wantHost, wantErr string
	}{
		{name: "flag wins over KUBECONFIG", flag: flag, env: env, wantHost: "https://flag.example:6443"},
		{name: "KUBECONFIG", env: env, wantHost: "https://env.example:6443"},
		{name: "nothing: in-cluster, not ~/.kube/config", wantErr: "not in a cluster"},
		{name: "missing flag file", flag: filepath.Join(home, "nope"), wantErr: "--kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.env)
			cfg, err := ClientConfig(tc.flag, "bindguard/test")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tc.wantHost || cfg.UserAgent != "bindguard/test" || cfg.Timeout != 0 {
				t.Fatalf("host %q agent %q timeout %v, want %q, bindguard/test, 0", cfg.Host, cfg.UserAgent, cfg.Timeout, tc.wantHost)
			}
		})
	}
}
