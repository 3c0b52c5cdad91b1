#!/usr/bin/env bash
# 50 hosts against a Pebble that refuses 30 % of nonces: every badNonce is retried with the
# nonce that came with it, and no host fails.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

hosts=${STORM_HOSTS:-50}
work=$(mktemp -d)
storm_dir="$HOST1_TLS_DIR/storm"
pebble_pid=""
cleanup() {
  [[ -n "$pebble_pid" ]] && kill "$pebble_pid" 2>/dev/null
  rm -rf "$work" "$storm_dir"
}
trap cleanup EXIT

# A second Pebble of our own, beside the environment's (whose defaults other tests keep),
# validating against the same BIND9.
base_port=$(sed -E 's|.*:([0-9]+)/dir|\1|' <<<"$PEBBLE_DIRECTORY_URL")
port=$((base_port + 100))
cat >"$work/pebble.json" <<JSON
{ "pebble": { "listenAddress": "127.0.0.1:$port",
  "managementListenAddress": "127.0.0.1:$((port + 1))",
  "certificate": "$CF_ENV_DIR/pki/listener.pem", "privateKey": "$CF_ENV_DIR/pki/listener.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "certificateValidityPeriod": 7776000 } }
JSON
env -i PATH="$PATH" PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=30 \
  pebble -config "$work/pebble.json" -dnsserver "$DNS_SERVER" -strict=false \
  >"$work/pebble.log" 2>&1 &
pebble_pid=$!
for _ in $(seq 1 100); do
  curl -fsS --cacert "$PEBBLE_CA_BUNDLE" "https://127.0.0.1:$port/dir" >/dev/null 2>&1 && break
  sleep 0.1
done

install -d -o "$SSH_USER" -g "$SSH_USER" -m 0755 "$storm_dir"
{
  cat <<YAML
version: 1
name: storm
state_dir: $work/state
stages:
  key: { plugin: openssl }
  dns:
    plugin: rfc2136
    settings: { server: "$DNS_SERVER", zone: example.test, tsig_name: "$TSIG_NAME",
                tsig_secret: "\${env:CERTFLEET_TSIG_SECRET}" }
  ca:
    plugin: acme
    ca_bundle: $PEBBLE_CA_BUNDLE
    settings: { directory: "https://127.0.0.1:$port/dir" }
  deploy:
    plugin: sftp
    settings: { known_hosts: "$SSH_KNOWN_HOSTS", identity_file: "$SSH_IDENTITY" }
propagation:
  nameservers: [ "$DNS_SERVER" ]
run: { parallel: 16 }
hosts:
YAML
  for i in $(seq 1 "$hosts"); do
    install -d -o "$SSH_USER" -g "$SSH_USER" -m 0755 "$storm_dir/host-$i"
    cat <<YAML
  host-$i:
    address: 127.0.0.1
    port: $HOST1_SSH_PORT
    user: $SSH_USER
    names: [storm-$i.example.test]
    stages:
      deploy: { key_path: "$storm_dir/host-$i/key.pem", chain_path: "$storm_dir/host-$i/fullchain.pem" }
YAML
  done
} >"$work/storm.yaml"

run_certfleet run "$work/storm.yaml" --log-level debug
check_eq "the run with 30 % of nonces refused exits 0" "$rc" 0
check_eq "every host issued" "$(grep -c ' issued ' <<<"$out")" "$hosts"
check_eq "no host failed" "$(grep -c ' failed ' <<<"$out" || true)" 0
retries=$(grep -c 'refused the nonce' <<<"$err" || true)
check "Pebble refused nonces during the run (${retries} retries logged)" test "$retries" -gt 0

finish
