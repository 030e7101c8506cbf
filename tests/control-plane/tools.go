//go:build tools

// Package tools pins the control plane the tests run against: building these from this module
// (go.mod/go.sum beside it) gives the same binaries on every machine.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
