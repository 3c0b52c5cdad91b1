# Shared helpers for the end-to-end tests: the environment, running certfleet, and
# assertions that count and report. Sourced, not run.
set -euo pipefail

: "${CERTFLEET_TEST_ENV:?set CERTFLEET_TEST_ENV to a directory started by tests/env/start-env}"
: "${CERTFLEET_BIN:?set CERTFLEET_BIN to the certfleet executable}"
# shellcheck source=/dev/null
source "$CERTFLEET_TEST_ENV/env.sh"
CERTFLEET_TSIG_SECRET=$(<"$TSIG_SECRET_FILE")
export CERTFLEET_TSIG_SECRET

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
passed=0
failed=0

pass() {
  passed=$((passed + 1))
  echo "ok   - $1"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL - $1" >&2
}
check() {
  local description=$1
  shift
  if "$@"; then pass "$description"; else fail "$description"; fi
}
check_eq() {
  if [[ "$2" == "$3" ]]; then pass "$1"; else fail "$1: expected '$3', got '$2'"; fi
}
check_ne() {
  if [[ "$2" != "$3" ]]; then pass "$1"; else fail "$1: both are '$2'"; fi
}
check_contains() {
  if [[ "$2" == *"$3"* ]]; then pass "$1"; else fail "$1: '$3' not found in: $2"; fi
}
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

# Runs certfleet, keeping its exit status, stdout and stderr in $rc, $out and $err.
run_certfleet() {
  local stdout stderr
  stdout=$(mktemp) stderr=$(mktemp)
  set +e
  "$CERTFLEET_BIN" "$@" >"$stdout" 2>"$stderr"
  rc=$?
  set -e
  out=$(<"$stdout")
  err=$(<"$stderr")
  rm -f "$stdout" "$stderr"
}

# The leaf a TLS port serves for a name: serial, SANs or fingerprint.
served() {
  local what=$1 port=$2 name=$3
  local pem
  pem=$(openssl s_client -connect "127.0.0.1:$port" -servername "$name" </dev/null 2>/dev/null |
    openssl x509 2>/dev/null) || true
  case $what in
    serial) openssl x509 -noout -serial <<<"$pem" | cut -d= -f2 ;;
    names) openssl x509 -noout -ext subjectAltName <<<"$pem" | tail -n +2 | tr -d ' ' ;;
    issuer) openssl x509 -noout -issuer <<<"$pem" ;;
    pem) echo "$pem" ;;
  esac
}

txt_records() {
  local server=$1 name=$2
  dig @"${server%:*}" -p "${server#*:}" +norecurse +short TXT "$name"
}

mode_of() { stat -c %a "$1"; }
