#!/usr/bin/env bash
# scripts/gen-certs.sh: what it makes verifies and names the nodes as
# util/tls.cc expects, keys and the gossip key file are mode 600, a second
# run keeps everything, a changed node is made again, and bad arguments
# are usage errors that make nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
gen=scripts/gen-certs.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "gen_certs_test: FAILED: $*" >&2; exit 1; }

$gen --help | grep -q '^Usage: scripts/gen-certs.sh' || fail "--help prints no usage"
out=$($gen --node eu-1.eu,db1.example.com --node us-1.us --client app --gossip-key "$dir/t")
[[ $(grep -c '^made ' <<<"$out") -eq 6 ]] || fail "first run: $out"

t=$dir/t
[[ $(stat -c %a "$t") == 700 ]] || fail "the directory is not mode 700"
for f in ca.key eu-1.key us-1.key client-ca.key client-app.key gossip.keys; do
  [[ $(stat -c %a "$t/$f") == 600 ]] || fail "$f is mode $(stat -c %a "$t/$f"), not 600"
done
openssl verify -CAfile "$t/ca.pem" "$t/eu-1.pem" "$t/us-1.pem" >/dev/null || fail "node certificates do not verify"
openssl verify -CAfile "$t/client-ca.pem" "$t/client-app.pem" >/dev/null || fail "the client certificate does not verify"
! openssl verify -CAfile "$t/ca.pem" "$t/client-app.pem" >/dev/null 2>&1 \
  || fail "the cluster CA signs client certificates (they could pass for nodes)"
subject=$(openssl x509 -in "$t/eu-1.pem" -noout -subject -nameopt RFC2253)
[[ $subject == "subject=CN=eu-1.eu" ]] || fail "eu-1: $subject"
san=$(openssl x509 -in "$t/eu-1.pem" -noout -ext subjectAltName | sed -n '2s/^ *//p')
[[ $san == "DNS:eu, DNS:eu-1, DNS:db1.example.com" ]] || fail "eu-1's names: $san"
grep -Eq '^[0-9]{4}-[0-9]{2} hex:[0-9a-f]{64}$' "$t/gossip.keys" || fail "gossip.keys: $(cat "$t/gossip.keys")"

before=$(cat "$t"/*.pem "$t/gossip.keys" | sha256sum)
out=$($gen --node eu-1.eu,db1.example.com --node us-1.us --client app --gossip-key "$t")
[[ $(grep -c '^kept ' <<<"$out") -eq 6 && $(grep -c '^made ' <<<"$out") -eq 0 ]] || fail "second run: $out"
[[ $(cat "$t"/*.pem "$t/gossip.keys" | sha256sum) == "$before" ]] || fail "a second run changed files"

out=$($gen --node eu-1.eu --node us-1.us "$t")
grep -q "^made $t/eu-1.pem" <<<"$out" || fail "eu-1 without db1.example.com was kept: $out"
grep -q "^kept $t/us-1.pem" <<<"$out" || fail "us-1 was made again: $out"

for args in "--node eu-1" "--node .eu" "--client a/b" "--days 0" "--bogus"; do
  rc=0
  # shellcheck disable=SC2086
  $gen $args "$dir/bad" >/dev/null 2>&1 || rc=$?
  [[ $rc -eq 2 ]] || fail "'$args' exits $rc, not 2"
  [[ ! -e $dir/bad ]] || fail "'$args' made $dir/bad"
done
rc=0
$gen --node eu-1.eu >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "no DIR exits $rc, not 2"
echo "gen_certs_test: PASSED"
