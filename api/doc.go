// Package api is Harrier's data model and wire contract. Every other package
// speaks these types; the Go code is generated from the .proto files here.
package api

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=paths=source_relative:. -I . -I /usr/include *.proto"
