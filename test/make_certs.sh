#!/usr/bin/env bash
# make_certs.sh DIR -- throwaway TLS material for the ZIM API test double.
#
# Creates in DIR (only what is missing; existing files are kept):
#   ca.crt, ca.key           a self-signed test CA
#   server.crt, server.key   a server certificate signed by that CA for
#                            SAN IP:127.0.0.1, DNS:localhost, valid 30 days
#   wrong_ca.crt             an unrelated CA, to test verification failure
#
# Keys are EC P-256. Every file is chmod 644, keys included: this is throwaway
# test material and the server may run as a different user. Needs only openssl.
# Quiet on success; on failure openssl's own message is shown.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
mkdir -p "$1"
cd "$1"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Run a command quietly; print its output only if it fails.
quiet() {
    if ! "$@" >"$tmp/out" 2>&1; then
        cat "$tmp/out" >&2
        return 1
    fi
}

# new_key FILE: an EC P-256 private key.
new_key() {
    quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# new_ca KEY CRT CN: a self-signed CA certificate.
new_ca() {
    quiet openssl req -x509 -new -key "$1" -sha256 -days 30 -subj "/CN=$3" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$2"
}

# The test CA. If any part of it is new, the server certificate is re-issued
# so that the set stays consistent.
if [[ ! -s ca.key || ! -s ca.crt ]]; then
    new_key ca.key
    new_ca ca.key ca.crt "zim-double test CA"
    rm -f server.crt
fi

# The server key and certificate.
if [[ ! -s server.key ]]; then
    new_key server.key
    rm -f server.crt
fi
if [[ ! -s server.crt ]]; then
    cat > "$tmp/ext.cnf" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EXT
    quiet openssl req -new -key server.key -subj "/CN=localhost" -out "$tmp/server.csr"
    quiet openssl x509 -req -in "$tmp/server.csr" -CA ca.crt -CAkey ca.key \
        -CAcreateserial -CAserial "$tmp/ca.srl" -sha256 -days 30 \
        -extfile "$tmp/ext.cnf" -out server.crt
fi

# The unrelated CA; its key is thrown away.
if [[ ! -s wrong_ca.crt ]]; then
    new_key "$tmp/wrong_ca.key"
    new_ca "$tmp/wrong_ca.key" wrong_ca.crt "zim-double unrelated CA"
fi

chmod 644 ca.crt ca.key server.crt server.key wrong_ca.crt
