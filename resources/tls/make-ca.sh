#!/usr/bin/env bash
# Makes a CA with openssl and, for each NAME[:IP], a directory OUT/NAME in the layout that
# `vmm --ft-tls-dir` and `arbiter serve --tls-dir` read (QEMU's tls-creds-x509 names): ca-cert.pem, server-cert.pem,
# server-key.pem, client-cert.pem, client-key.pem. The certificates carry NAME as a DNS name
# and IP (if given) as an IP address: what a peer checks (--ft-peer-name NAME, or by address).
#
#   resources/tls/make-ca.sh /etc/ft-tls host-a:10.78.0.4 host-b:10.78.0.5 arbiter:10.77.0.3
#
# With a CA of your own, skip the first step and sign with it instead. Keep OUT/ca-key.pem
# off the hosts: only each host's own directory goes to that host.
set -euo pipefail
out=${1:?usage: make-ca.sh OUT NAME[:IP]...}
shift
mkdir -p "$out"
umask 077
if [ ! -f "$out/ca-key.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=ft CA" -keyout "$out/ca-key.pem" -out "$out/ca-cert.pem" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi
for spec in "$@"; do
    name=${spec%%:*}
    san="DNS:$name"
    [ "$spec" != "$name" ] && san="$san,IP:${spec#*:}"
    dir="$out/$name"
    mkdir -p "$dir"
    for side in server client; do
        eku=serverAuth
        [ "$side" = client ] && eku=clientAuth
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
            -keyout "$dir/$side-key.pem" -out "$dir/$side.csr" 2>/dev/null
        openssl x509 -req -in "$dir/$side.csr" -CA "$out/ca-cert.pem" -CAkey "$out/ca-key.pem" \
            -days 825 -out "$dir/$side-cert.pem" 2>/dev/null -extfile <(printf '%s\n' \
            "subjectAltName=$san" "extendedKeyUsage=$eku" "keyUsage=critical,digitalSignature")
        rm -f "$dir/$side.csr"
    done
    cp "$out/ca-cert.pem" "$dir/"
done
