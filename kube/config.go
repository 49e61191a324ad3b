package kube

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClientConfig finds the API server and credentials in client-go's order for
// a node agent: the explicit kubeconfig path (--kubeconfig), then the
// KUBECONFIG variable, then the in-cluster service account. It does not fall
// back to ~/.kube/config: a daemon run as root on a control-plane node would
// pick up an administrator's credentials without anyone asking for them.
func ClientConfig(kubeconfig, userAgent string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
		src string
	)
	switch {
	case kubeconfig != "":
		src = "--kubeconfig " + kubeconfig
		cfg, err = fromKubeconfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig})
	case os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "":
		src = "KUBECONFIG " + os.Getenv(clientcmd.RecommendedConfigPathEnvVar)
		rules := &clientcmd.ClientConfigLoadingRules{
			Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence,
		}
		cfg, err = fromKubeconfig(rules)
	default:
		src = "in-cluster service account"
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			err = errors.New("not in a cluster (no KUBERNETES_SERVICE_HOST): give --kubeconfig or set KUBECONFIG")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kube client config from %s: %w", src, err)
	}
	cfg.UserAgent = userAgent
	// One Node watch: a few requests a minute at most, even when relisting.
	// cfg.Timeout stays 0: it would cut the long-running watch. Each list
	// carries its own deadline instead.
	cfg.QPS, cfg.Burst = 5, 10
	return cfg, nil
}

func fromKubeconfig(rules *clientcmd.ClientConfigLoadingRules) (*rest.Config, error) {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
}
