package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/bindguard/bindguard/policy"
)

func TestConfigComplete(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(Config) bool
	}{
		{"defaults", Config{}, "", func(c Config) bool {
			return c.Mode == policy.ModeAudit && c.Cgroup == "/" && c.CheckInterval == DefaultCheckInterval
		}},
		{"negative event interval", Config{EventInterval: -time.Second}, "event interval -1s: must be 0 or more", nil},
		{"negative check interval", Config{CheckInterval: -time.Second}, "check interval -1s", nil},
		{"pod ports without pod identity", Config{PodPorts: true, CRISocket: "none"},
			"--pod-ports=require with --cri-socket none: pod ports are checked only for pods identified through the container runtime", nil},
		{"pod ports with pod identity", Config{PodPorts: true, CRISocket: "/run/containerd/containerd.sock"}, "", func(c Config) bool { return c.PodPorts }},
		{"a kubeconfig without a node", Config{Node: NodeConfig{Kubeconfig: "/etc/kubeconfig"}},
			"--kubeconfig without --node-name: the kubeconfig is used only to follow the Node", nil},
		{"a kubeconfig with a node", Config{Node: NodeConfig{Name: "n", Kubeconfig: "/etc/kubeconfig"}}, "", func(c Config) bool { return c.Node.Name == "n" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.complete()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("complete() = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(tc.cfg) {
				t.Errorf("completed config %+v", tc.cfg)
			}
		})
	}
}
