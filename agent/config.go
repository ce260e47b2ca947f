// Package agent wires one node's pipeline and holds its configuration. It
// has no logic of its own beyond lifecycle.
package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/sensor"
)

// Config is the whole node configuration, loaded from one YAML file.
// Sections for later parts (analytics, spool, uplink, kube) join it as they land.
type Config struct {
	Sensor sensor.Config `json:"sensor"`
}

// LoadConfig reads path strictly: unknown fields, wrong types and invalid
// values are errors that name the file and the problem.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Sensor.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: sensor: %w", path, err)
	}
	return cfg, nil
}
