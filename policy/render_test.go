package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	reg, err := Parse("r.yaml", []byte(header+
		"  - {port: \"10-12\", protocol: [tcp, udp], process: ranged, bind: localhost}\n"+
		"  - {port: 20, process: etcd, owners: [{pod: {namespace: kube-system, labels: {component: etcd}}}, {unit: etcd.service}], mode: audit}\n"+
		"removed:\n  - {port: 30, process: old}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := c.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PORT   PROTO  BIND       MODE     OWNERS                                                RULE    PROCESS",
		"10-12  tcp    localhost  enforce  any                                                   r.yaml:4  ranged",
		"20     tcp    any        audit    unit:etcd.service,pod:kube-system[component=etcd]",
		"30     tcp    -          enforce  none (removed)",
		"10-12  udp    localhost  enforce  any",
		"8 rules (1 removed ports), digest " + c.Digest,
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(strings.Fields(table.String()), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("table lacks %q:\n%s", w, table.String())
		}
	}
	var js bytes.Buffer
	if err := c.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc CompiledJSON
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Rules) != 8 || doc.Rules[3].Owners.Pods[0].Namespace != "kube-system" || doc.Rules[3].Mode != "audit" {
		t.Errorf("JSON rules %+v", doc.Rules)
	}
	if strings.Contains(js.String(), "null") {
		t.Errorf("JSON has a null:\n%s", js.String())
	}
}
