#!/usr/bin/env bash
# The control plane's keys and certificates, made once into $1 (openssl): a CA, the API
# server's serving certificate for 127.0.0.1, the front-proxy CA (without it the
# controller-manager and scheduler complain every 5 s), the service-account signing pair, and
# client certificates for the admin (system:masters), the controller-manager and the scheduler.
set -euo pipefail
P=$1
[ -f "$P/done" ] && exit 0
mkdir -p "$P"; cd "$P"
ca() { # name CN
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -subj "/CN=$2" -days 30 -out "$1.crt" 2>/dev/null
}
signed() { # name subject extensions
  printf '%b' "$3" > "$1.ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca sih-test-ca
ca front-proxy-ca sih-test-front-proxy-ca
base='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n'
signed apiserver /CN=kube-apiserver "${base}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
signed admin /O=system:masters/CN=sih-test-admin "${base}extendedKeyUsage=clientAuth\n"
signed controller-manager /CN=system:kube-controller-manager "${base}extendedKeyUsage=clientAuth\n"
signed scheduler /CN=system:kube-scheduler "${base}extendedKeyUsage=clientAuth\n"
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
touch done
