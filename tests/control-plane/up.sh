#!/usr/bin/env bash
# Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback,
# with their state, logs and PIDs in DIR (etcd's data wiped first: every start is a new
# cluster). Prints KUBECONFIG=DIR/admin.kubeconfig once every part answers.
#   up.sh BIN DIR      (ports from SIH_CP_PORT_BASE, default 26400: base+0..5)
# Fixed ports below the ephemeral range (32768-60999), which another process can take mid-run.
set -euo pipefail
BIN=$1 DIR=$2
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${SIH_CP_PORT_BASE:-26400}
ETCD=$BASE ETCD_PEER=$((BASE + 1)) API=$((BASE + 2)) KCM=$((BASE + 3)) SCHED=$((BASE + 4)) KWOK=$((BASE + 5))
P=${SIH_CP_PKI:-$DIR/pki}
"$HERE/down.sh" "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR/etcd" "$DIR/logs" "$DIR/pids"
mkdir -p "$DIR/pids" "$DIR/logs"
"$HERE/pki.sh" "$P"

start() { # name command...
  local name=$1; shift
  nohup "$@" >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name"
}
ready() { # name url [curl args...]
  local name=$1 url=$2; shift 2
  for _ in $(seq 1 300); do
    if ! kill -0 "$(cat "$DIR/pids/$name")" 2>/dev/null; then
      echo "control-plane: $name exited; the end of $DIR/logs/$name.log:" >&2
      tail -20 "$DIR/logs/$name.log" >&2; exit 1
    fi
    curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "control-plane: $name not ready after 30 s; the end of $DIR/logs/$name.log:" >&2
  tail -20 "$DIR/logs/$name.log" >&2; exit 1
}
kubeconfig() { # file user cert key
  cat >"$1" <<K
apiVersion: v1
kind: Config
clusters:
- name: sih-test
  cluster:
    server: https://127.0.0.1:$API
    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$3")
    client-key-data: $(base64 -w0 "$4")
contexts:
- name: sih-test
  context: {cluster: sih-test, user: $2}
current-context: sih-test
K
}
kubeconfig "$DIR/admin.kubeconfig" admin "$P/admin.crt" "$P/admin.key"
kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager "$P/controller-manager.crt" "$P/controller-manager.key"
kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler "$P/scheduler.crt" "$P/scheduler.key"
sed "s/@KWOK_PORT@/$KWOK/g" "$HERE/kwok.yaml" >"$DIR/kwok.yaml"

start etcd "$BIN/etcd" --name sih-test --data-dir "$DIR/etcd" --log-level warn \
  --listen-client-urls "http://127.0.0.1:$ETCD" --advertise-client-urls "http://127.0.0.1:$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "sih-test=http://127.0.0.1:$ETCD_PEER" \
  --unsafe-no-fsync # a test cluster: nothing to keep across a crash, and fsync is most of etcd's latency
ready etcd "http://127.0.0.1:$ETCD/health"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API" \
  --endpoint-reconciler-type none --cert-dir "$DIR/apiserver-certs" \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --client-ca-file "$P/ca.crt" \
  --requestheader-client-ca-file "$P/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC \
  --profiling=false
ready kube-apiserver "https://127.0.0.1:$API/readyz" --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key"

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KCM" \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --use-service-account-credentials=true \
  --node-monitor-period 1s \
  --controllers '*,-service-lb-controller,-node-route-controller,-cloud-node-lifecycle-controller' \
  --profiling=false
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHED" --profiling=false
start kwok "$BIN/kwok" --kubeconfig "$DIR/admin.kubeconfig" --config "$DIR/kwok.yaml"
ready kube-controller-manager "https://127.0.0.1:$KCM/healthz" -k
ready kube-scheduler "https://127.0.0.1:$SCHED/healthz" -k
ready kwok "http://127.0.0.1:$KWOK/healthz"
echo "KUBECONFIG=$DIR/admin.kubeconfig"
