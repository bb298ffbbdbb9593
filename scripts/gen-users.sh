#!/usr/bin/env bash
# Makes the users file a geokv cluster runs with (--users FILE;
# docs/operations.md#users, docs/formats.md#users-file): users who log in
# with a client certificate naming them, and users who log in with a
# random secret it makes. Idempotent like scripts/gen-certs.sh: what is
# already in FILE and still fits is kept, so it can run before every start.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/gen-users.sh [OPTIONS] FILE

Makes the users file FILE (mode 600; its directory DIR is created, mode 700),
keeping what is already there and fits:

  NAME ROLE -       per --user NAME:ROLE: a user who logs in only with a client
                    certificate whose CN is NAME (gen-certs.sh --client NAME)
  NAME ROLE HASH    per --secret-user NAME:ROLE: a user who logs in with a secret
                    (geokv-cli --user NAME --secret-file DIR/NAME.secret); a random
                    one is made in DIR/NAME.secret (mode 600), FILE holds its hash
                    (geokv-cli hash-secret)

ROLE is read, write or admin. A user's line is kept when it has the role
asked for and, for a secret user, a hash and a DIR/NAME.secret; otherwise it
is made again (from the secret in DIR/NAME.secret, or a new one when there
is none). Lines of users not named here (added by hand) and comments are
kept. Nodes read FILE again on SIGHUP.

Options:
  --user NAME:ROLE         a user reached by a client certificate; repeatable
  --secret-user NAME:ROLE  a user with a random secret; repeatable
  --iterations N           PBKDF2 iterations of new hashes (default: geokv-cli
                           hash-secret's, 600,000)
  -h, --help               this help

Environment: GEOKV_CLI, the geokv-cli that hashes (default: geokv-cli on PATH).

Example:
  scripts/gen-users.sh --user app:write --user ops:admin --secret-user ana:read \
      /etc/geokv/tls/users
  geokv-server --users /etc/geokv/tls/users ...
EOF
}

die() { echo "gen-users.sh: $*" >&2; exit 2; }

specs=() iterations="" file=""
while (($#)); do
  case $1 in
    --user) (($# >= 2)) || die "--user needs NAME:ROLE"; specs+=("cert:$2"); shift 2 ;;
    --secret-user) (($# >= 2)) || die "--secret-user needs NAME:ROLE"; specs+=("secret:$2"); shift 2 ;;
    --iterations) (($# >= 2)) || die "--iterations needs N"; iterations=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $file ]] || die "one FILE only (got $file and $1)"; file=$1; shift ;;
  esac
done
[[ -n $file ]] || die "FILE missing (see --help)"
((${#specs[@]})) || die "no user asked for (--user or --secret-user)"
[[ -z $iterations || $iterations =~ ^[1-9][0-9]*$ ]] || die "--iterations: '$iterations' is not a positive number"

declare -A role_of kind_of
names=()
for spec in "${specs[@]}"; do
  kind=${spec%%:*} rest=${spec#*:}
  name=${rest%%:*} role=${rest#*:}
  [[ $rest == *:* && $name =~ ^[A-Za-z0-9._@-]+$ ]] \
    || die "'$rest': want NAME:ROLE (NAME of letters, digits, '.', '_', '-', '@')"
  [[ $role == read || $role == write || $role == admin ]] || die "'$rest': ROLE is read, write or admin"
  [[ -z ${role_of[$name]:-} ]] || die "user $name named twice"
  role_of[$name]=$role kind_of[$name]=$kind
  names+=("$name")
done

cli=${GEOKV_CLI:-geokv-cli}
if [[ " ${kind_of[*]} " == *" secret "* ]]; then
  command -v "$cli" >/dev/null || die "$cli not found (set GEOKV_CLI): it hashes the secrets"
fi

umask 077
dir=$(dirname "$file")
mkdir -p "$dir"

# Whether the line for NAME (ROLE, HASH) is what was asked for.
fits() {
  local name=$1 role=$2 hash=$3
  [[ $role == "${role_of[$name]}" ]] || return 1
  [[ ${kind_of[$name]} == cert ]] || [[ $hash != - && -s $dir/$name.secret ]]
}

tmp="$file.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: >"$tmp"
declare -A kept
if [[ -f $file ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    read -r name role hash _ <<<"$line" || true
    if [[ -n ${name:-} && $name != \#* && -n ${role_of[$name]:-} ]]; then
      [[ -z ${kept[$name]:-} ]] && fits "$name" "$role" "${hash:--}" || continue
      kept[$name]=1
      echo "kept user $name ($role)"
    fi
    printf '%s\n' "$line" >>"$tmp"
  done <"$file"
fi
for name in "${names[@]}"; do
  [[ -z ${kept[$name]:-} ]] || continue
  role=${role_of[$name]} hash=- how="by certificate"
  if [[ ${kind_of[$name]} == secret ]]; then
    secret_file=$dir/$name.secret
    if [[ ! -s $secret_file ]]; then
      head -c 24 /dev/urandom | base64 >"$secret_file.tmp"
      mv "$secret_file.tmp" "$secret_file"
    fi
    chmod 600 "$secret_file"
    hash=$("$cli" hash-secret ${iterations:+--iterations "$iterations"} <"$secret_file") \
      || { echo "gen-users.sh: $cli hash-secret failed" >&2; exit 1; }
    how="with the secret in $secret_file"
  fi
  echo "$name $role $hash" >>"$tmp"
  echo "made user $name ($role, $how)"
done
chmod 600 "$tmp"
mv -f "$tmp" "$file"
trap - EXIT
