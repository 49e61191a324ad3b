// Package podcheck judges a cluster's pods against the host port registry:
// every host port a pod declares must be one the registry gives to that pod
// on the node the pod runs on. It is the cluster-wide half of OpenShift's two
// automated checks (the node agent's bind() check is the other half), behind
// `bindguard pods`.
//
// It owns:
//   - which pods are checked and which of their ports are host ports: every
//     pod with hostNetwork (each containerPort, since the API defaults
//     hostPort to containerPort there) and every pod with a hostPort (that
//     hostPort);
//   - the verdict on each such port, judged with the labels of the pod's node
//     through policy.Compile, once per distinct label set (see Check);
//   - decoding the JSON that `kubectl get pods -A -o json` and
//     `kubectl get nodes -o json` print, with errors that name the item and
//     the field (ReadPods, ReadNodes), and listing the same from a live API
//     server (List). A workload in a file (DaemonSet, Deployment, ...)
//     stands for its pod template, so rendered manifests can be checked;
//   - the report's table and its one JSON document (Report.WriteTable,
//     Report.WriteJSON).
//
// It does not own the registry language, selectors, owners or compilation
// (package policy), finding the API server and credentials (cmd), or
// anything at bind() time: a pod that binds a port it never declared is
// caught on the node by the kernel programs, not here.
//
// # Verdicts
//
// Each declared host port gets one of:
//
//	ok            the registry declares the port on the node and the pod may bind it
//	undeclared    no entry for the port and protocol on the pod's node
//	removed       the port is in the registry's removed list on that node
//	owner         the entry lists owners and no pod: owner matches the pod's
//	              namespace, labels and the declaring container (an entry whose
//	              owners are only units, cgroups or uids admits no pod)
//	address       the entry is localhost-only and a hostPort is published on
//	              every address or on a non-loopback hostIP (host-network pods
//	              choose their address at bind(), which only the node sees)
//
// and these warnings, which do not judge a port:
//
//	no-ports      a host-network pod declares no port at all: nothing can be checked
//	unscheduled   the pod has no spec.nodeName, so its node's labels are unknown
//	unknown-node  the pod's node is not among the nodes given
//	sctp          an SCTP port: the registry and the node agent cover TCP and UDP only
//
// Unscheduled pods and pods on unknown nodes are judged with Options.Labels
// when it is set (as `bindguard pods --node-label` does for rendered
// manifests), never against every node: a pod judged against nodes it will
// never run on reports violations that are not there. A workload's pod
// template has no node: it is judged only with Options.Labels.
//
// Init containers run in the pod's network namespace, so their ports are
// checked like the others'. Ephemeral containers may not declare ports (the
// API refuses it); any they do declare in a file are checked too.
package podcheck
