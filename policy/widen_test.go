package policy

import (
	"strings"
	"testing"
)

func TestWidenings(t *testing.T) {
	const header = "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: t}\nentries:\n"
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"a range entry takes localhost and owners from a stricter one",
			"  - {port: 9100, process: node-exporter, bind: localhost, owners: [{unit: node-exporter.service}]}\n" +
				"  - {port: \"9000-9999\", process: Node-Exporter}\n",
			[]string{
				"t.yaml:5:5: warning: node-exporter 9100/tcp is merged with the entry at t.yaml:6:5 of the same process, which has no bind: localhost: 9100 is bound on any address",
				"t.yaml:5:5: warning: node-exporter 9100/tcp is merged with the entry at t.yaml:6:5 of the same process, which has no owners: 9100 may be bound by anyone",
			}},
		{"owners of two entries are a union, not a widening",
			"  - {port: 9100, process: a, owners: [{uid: 1}]}\n  - {port: 9100, process: a, owners: [{uid: 2}]}\n", nil},
		{"both localhost",
			"  - {port: 9100, process: a, bind: localhost}\n  - {port: \"9100-9101\", process: a, bind: localhost}\n", nil},
		{"entries of other ports do not meet",
			"  - {port: 9100, process: a, bind: localhost}\n  - {port: 9101, process: a}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := Parse("t.yaml", []byte(header+tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if errs := reg.Validate(nil); len(errs) > 0 {
				t.Fatal(errs)
			}
			var got []string
			for _, w := range reg.Widenings(nil) {
				got = append(got, w.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
