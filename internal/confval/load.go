package confval

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// LoadYAML reads the YAML file at path into cfg (a pointer to a typed config)
// strictly: an unknown or repeated field, a wrong type or a value cfg's
// Validate refuses is an error that names the file and the problem.
func LoadYAML(path string, cfg interface{ Validate() error }) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := yaml.UnmarshalStrict(raw, cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}
