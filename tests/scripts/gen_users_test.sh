#!/usr/bin/env bash
# scripts/gen-users.sh: the file and the secrets are mode 600, certificate
# users have no hash and secret users the hash of their secret file's
# secret, a second run keeps everything (and lines added by hand), a
# changed role or a lost secret makes that user again, and bad arguments
# are usage errors that make nothing.
#
#   GEOKV_CLI=PATH  the geokv-cli that hashes (ctest passes the built one);
#                   without it a stand-in hashes, and the hash's format is
#                   not checked
set -euo pipefail
cd "$(dirname "$0")/../.."
gen=scripts/gen-users.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "gen_users_test: FAILED: $*" >&2; exit 1; }

real_cli=0
if [[ -x ${GEOKV_CLI:-} ]]; then
  real_cli=1
else
  # A stand-in for `geokv-cli hash-secret`: a new salt each time, like the real one.
  export GEOKV_CLI=$dir/fake-cli
  cat >"$GEOKV_CLI" <<'STAND_IN'
#!/bin/sh
read -r secret
salt=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "pbkdf2-sha256\$1000\$$salt\$$(printf %s "$secret" | sha256sum | cut -c1-16)"
STAND_IN
  chmod +x "$GEOKV_CLI"
  echo "gen_users_test: no GEOKV_CLI; a stand-in hashes the secrets"
fi

$gen --help | grep -q '^Usage: scripts/gen-users.sh' || fail "--help prints no usage"
t=$dir/t
users=$t/users
spec=(--user workload:write --user operator:admin --secret-user reader:read --iterations 1000)
out=$($gen "${spec[@]}" "$users")
[[ $(grep -c '^made user ' <<<"$out") -eq 3 ]] || fail "first run: $out"
[[ $(stat -c %a "$t") == 700 ]] || fail "the directory is not mode 700"
for f in users reader.secret; do
  [[ $(stat -c %a "$t/$f") == 600 ]] || fail "$f is mode $(stat -c %a "$t/$f"), not 600"
done
grep -qx 'workload write -' "$users" || fail "workload: $(cat "$users")"
grep -qx 'operator admin -' "$users" || fail "operator: $(cat "$users")"
grep -Eq '^reader read pbkdf2-sha256\$' "$users" || fail "reader: $(cat "$users")"
[[ $(wc -l <"$users") -eq 3 ]] || fail "more than three lines: $(cat "$users")"
[[ $(wc -c <"$t/reader.secret") -ge 32 ]] || fail "reader.secret is short"
if ((real_cli)); then
  grep -Eq '^reader read pbkdf2-sha256\$1000\$' "$users" || fail "reader's hash: $(grep '^reader' "$users")"
fi

echo "ana read -" >>"$users"
echo "# added by hand" >>"$users"
before=$(cat "$users" "$t/reader.secret" | sha256sum)
out=$($gen "${spec[@]}" "$users")
[[ $(grep -c '^kept user ' <<<"$out") -eq 3 && $(grep -c '^made ' <<<"$out") -eq 0 ]] || fail "second run: $out"
[[ $(cat "$users" "$t/reader.secret" | sha256sum) == "$before" ]] || fail "a second run changed files"

secret_before=$(cat "$t/reader.secret")
hash_before=$(grep '^reader ' "$users")
sed -i 's/^workload write -$/workload read -/' "$users"
out=$($gen "${spec[@]}" "$users")
grep -q '^made user workload (write' <<<"$out" || fail "workload with another role was kept: $out"
grep -qx 'workload write -' "$users" && ! grep -qx 'workload read -' "$users" || fail "workload: $(cat "$users")"
grep -qx 'ana read -' "$users" || fail "ana, added by hand, is gone: $(cat "$users")"
[[ $(cat "$t/reader.secret") == "$secret_before" && $(grep '^reader ' "$users") == "$hash_before" ]] \
  || fail "reader changed with workload's role"

rm "$t/reader.secret"
out=$($gen "${spec[@]}" "$users")
grep -q '^made user reader (read' <<<"$out" || fail "reader without its secret was kept: $out"
[[ -s $t/reader.secret && $(cat "$t/reader.secret") != "$secret_before" ]] || fail "no new secret for reader"
[[ $(grep '^reader ' "$users") != "$hash_before" ]] || fail "reader's hash did not change with its secret"
[[ $(grep -c '^reader ' "$users") -eq 1 ]] || fail "reader appears twice: $(cat "$users")"

for args in "--user workload" "--user workload:root" "--user a/b:read" "--user x:read --secret-user x:read" \
            "--iterations 0 --user x:read" "--bogus"; do
  rc=0
  # shellcheck disable=SC2086
  $gen $args "$dir/bad/users" >/dev/null 2>&1 || rc=$?
  [[ $rc -eq 2 ]] || fail "'$args' exits $rc, not 2"
  [[ ! -e $dir/bad ]] || fail "'$args' made $dir/bad"
done
rc=0
$gen "$dir/bad/users" >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "no user exits $rc, not 2"
rc=0
$gen --user x:read >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "no FILE exits $rc, not 2"
echo "gen_users_test: PASSED"
