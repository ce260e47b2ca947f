package replicate

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"three servers", Config{Servers: []string{"nats://a:4222", "tls://b:4222", "nats://c:4222"}}, ""},
		{"no servers", Config{}, "at least one NATS URL"},
		{"http URL", Config{Servers: []string{"http://a:4222"}}, "want nats://"},
		{"six replicas", Config{Servers: []string{"nats://a:4222"}, Replicas: 6}, "1 to 5"},
		{"certificate without key", Config{Servers: []string{"nats://a:4222"}, CertFile: "c.crt"}, "go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("valid config refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.Stream != DefaultStream || d.Replicas != DefaultReplicas || d.DuplicateWindow.Std() != 10*time.Minute || d.ReplicaName == "" {
		t.Errorf("defaults %+v", d)
	}
}

func TestMsgID(t *testing.T) {
	if got := MsgID("node-1", "ab12", 42); got != "node-1/ab12/42" {
		t.Errorf("MsgID = %q", got)
	}
}
