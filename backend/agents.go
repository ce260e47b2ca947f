package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// agentRecord is the stored form of AgentInfo; health stays protobuf.
type agentRecord struct {
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
	Records   uint64            `json:"records"`
	Gaps      map[string]uint64 `json:"gaps,omitempty"` // by RecordClass name
	Health    []byte            `json:"health,omitempty"`
	// UsualGap is the agent's usual time between uploads (usualGap).
	UsualGap time.Duration `json:"usual_gap,omitempty"`
}

// usualGap folds one more gap between uploads into the usual one (an
// exponentially weighted mean). A gap is counted as at most ten times the
// usual, so one outage does not make the next look normal.
func usualGap(usual, gap time.Duration) time.Duration {
	if gap < 0 {
		return usual
	}
	if usual <= 0 {
		return gap
	}
	return (usual*9 + min(gap, 10*usual)) / 10
}

func (s *BadgerStore) loadAgent(txn *badger.Txn, id string) (agentRecord, error) {
	var a agentRecord
	if _, err := getJSON(txn, agentKey(id), &a); err != nil {
		return a, fmt.Errorf("load agent %q: %w", id, err)
	}
	return a, nil
}

// Agents lists every agent that has uploaded.
func (s *BadgerStore) Agents(ctx context.Context) ([]AgentInfo, error) {
	var out []AgentInfo
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		out, err = readAgents(ctx, txn)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// readAgents decodes every agent record.
func readAgents(ctx context.Context, txn *badger.Txn) ([]AgentInfo, error) {
	var out []AgentInfo
	for item := range badgerkv.Prefix(txn, key(prefixAgent)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info, err := readAgent(item)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// readAgent decodes one agent record (its key under prefixAgent).
func readAgent(item *badger.Item) (AgentInfo, error) {
	id := string(bytes.TrimPrefix(item.Key(), key(prefixAgent)))
	var rec agentRecord
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) }); err != nil {
		return AgentInfo{}, fmt.Errorf("agent %q: %w", id, err)
	}
	info := AgentInfo{ID: id, FirstSeen: rec.FirstSeen, LastSeen: rec.LastSeen, Records: rec.Records, UsualGap: rec.UsualGap}
	if len(rec.Gaps) > 0 {
		info.Gaps = make(map[api.RecordClass]uint64, len(rec.Gaps))
		for name, n := range rec.Gaps {
			info.Gaps[api.RecordClass(api.RecordClass_value[name])] += n
		}
	}
	if len(rec.Health) > 0 {
		info.Health = &api.AgentHealth{}
		if err := proto.Unmarshal(rec.Health, info.Health); err != nil {
			return AgentInfo{}, fmt.Errorf("agent %q health: %w", id, err)
		}
	}
	return info, nil
}
