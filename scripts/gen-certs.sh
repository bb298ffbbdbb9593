#!/usr/bin/env bash
# Makes the certificates and keys a geokv cluster runs with
# (docs/operations.md#certificates): a cluster CA, node certificates it
# signs, a client CA and client certificates it signs, and a gossip key
# file. Idempotent: what is already in DIR and still fits is kept, so it can
# run before every start.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/gen-certs.sh [OPTIONS] DIR

Makes in DIR (created, mode 700), keeping what is already there and fits:

  ca.pem, ca.key                the cluster's CA (--tls-ca); made once
  NAME.pem, NAME.key            per --node NAME.REGION: CN=NAME.REGION, DNS names
                                REGION and NAME (and any given), signed by ca
                                (--tls-cert, --tls-key)
  client-ca.pem, client-ca.key  with --client: the clients' CA (--client-ca)
  client-NAME.pem, .key         per --client NAME: CN=NAME, signed by client-ca
                                (geokv-cli --tls-cert, --tls-key)
  gossip.keys                   with --gossip-key: one key `YYYY-MM hex:...`,
                                mode 600 (--gossip-key-file)

A certificate is kept when it has the subject and DNS names asked for and
verifies against its CA; otherwise it is made again (so is every
certificate after its CA was made again). Keys are mode 600, certificates 644.
Needs openssl 3.0 or later.

Options:
  --node NAME.REGION[,DNS...]  a node certificate, with further DNS names
                               (host names clients use); repeatable
  --client NAME                a client certificate; repeatable
  --gossip-key                 a gossip key file
  --days N                     validity of node and client certificates
                               (default 365; the CAs: 3650)
  -h, --help                   this help

Example:
  scripts/gen-certs.sh --node eu-1.eu,db1.example.com --node us-1.us \
      --client app --gossip-key /etc/geokv/tls
  geokv-server --node-id eu-1 --region eu --tls-cert /etc/geokv/tls/eu-1.pem \
      --tls-key /etc/geokv/tls/eu-1.key --tls-ca /etc/geokv/tls/ca.pem ...
EOF
}

die() { echo "gen-certs.sh: $*" >&2; exit 2; }

nodes=() clients=() gossip_key=0 days=365 dir=""
while (($#)); do
  case $1 in
    --node) (($# >= 2)) || die "--node needs NAME.REGION"; nodes+=("$2"); shift 2 ;;
    --client) (($# >= 2)) || die "--client needs NAME"; clients+=("$2"); shift 2 ;;
    --gossip-key) gossip_key=1; shift ;;
    --days) (($# >= 2)) || die "--days needs N"; days=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $dir ]] || die "one DIR only (got $dir and $1)"; dir=$1; shift ;;
  esac
done
[[ -n $dir ]] || die "DIR missing (see --help)"
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days: '$days' is not a positive number"
command -v openssl >/dev/null || die "openssl not found"

label='[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?'
for spec in "${nodes[@]}"; do
  cn=${spec%%,*}
  name=${cn%.*} region=${cn##*.}
  [[ $cn == *.* && $name =~ ^[A-Za-z0-9._-]+$ && $region =~ ^$label$ ]] \
    || die "--node '$spec': want NAME.REGION (NAME of letters, digits, '-', '_', '.'; REGION a DNS label)"
  [[ $name != ca && $name != client-* && $name != gossip ]] \
    || die "--node '$spec': the name $name is taken by another file"
done
for name in "${clients[@]}"; do
  [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "--client '$name': letters, digits, '-', '_' and '.' only"
done

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

# Runs openssl quietly; its own output only when it fails.
ossl() {
  local out
  out=$(openssl "$@" 2>&1) || { echo "gen-certs.sh: openssl $1 failed in $dir: $out" >&2; exit 1; }
}

# A self-signed CA NAME.pem and NAME.key, unless both exist.
make_ca() {
  local name=$1 subject=$2
  if [[ -s $name.pem && -s $name.key ]]; then
    echo "kept $dir/$name.pem"
    return
  fi
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.pem" -days 3650 -subj "/CN=$subject"
  chmod 600 "$name.key"
  chmod 644 "$name.pem"
  echo "made $dir/$name.pem"
}

# Whether FILE.pem and FILE.key exist, FILE.pem has subject CN=CN and
# exactly the DNS names given, and verifies against CA.pem.
fits() {
  local file=$1 cn=$2 ca=$3; shift 3
  [[ -s $file.pem && -s $file.key ]] || return 1
  openssl verify -CAfile "$ca.pem" "$file.pem" >/dev/null 2>&1 || return 1
  openssl x509 -in "$file.pem" -noout -subject -nameopt RFC2253 2>/dev/null \
    | grep -qx "subject=CN=$cn" || return 1
  local want="" have
  (($#)) && want=$(printf ', DNS:%s' "$@") && want=${want#, }
  have=$(openssl x509 -in "$file.pem" -noout -ext subjectAltName 2>/dev/null | sed -n '2s/^ *//p')
  [[ $have == "$want" ]]
}

# A certificate FILE.pem and FILE.key with subject CN=CN and the DNS names
# given, signed by CA.pem, unless one that fits is there.
make_cert() {
  local file=$1 cn=$2 ca=$3; shift 3
  if fits "$file" "$cn" "$ca" "$@"; then
    echo "kept $dir/$file.pem"
    return
  fi
  local san=() names
  if (($#)); then
    names=$(printf ',DNS:%s' "$@")
    san=(-addext "subjectAltName=${names#,}")
  fi
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$file.key" -out "$file.pem" -days "$days" -subj "/CN=$cn" \
    "${san[@]}" -addext "basicConstraints=critical,CA:FALSE" -CA "$ca.pem" -CAkey "$ca.key"
  chmod 600 "$file.key"
  chmod 644 "$file.pem"
  echo "made $dir/$file.pem (CN=$cn${names:+, ${names#,}})"
}

make_ca ca "geokv cluster CA"
for spec in "${nodes[@]}"; do
  IFS=, read -r -a parts <<<"$spec"
  cn=${parts[0]}
  name=${cn%.*} region=${cn##*.}
  dns_names=("$region")
  [[ $name == "$region" ]] || dns_names+=("$name")
  for dns in "${parts[@]:1}"; do
    [[ $dns == "$name" || $dns == "$region" ]] || dns_names+=("$dns")
  done
  make_cert "$name" "$cn" ca "${dns_names[@]}"
done
if ((${#clients[@]})); then
  make_ca client-ca "geokv client CA"
  for name in "${clients[@]}"; do
    make_cert "client-$name" "$name" client-ca
  done
fi
if ((gossip_key)); then
  if [[ -s gossip.keys ]]; then
    echo "kept $dir/gossip.keys"
  else
    printf '%s hex:%s\n' "$(date -u +%Y-%m)" "$(openssl rand -hex 32)" >gossip.keys.tmp
    chmod 600 gossip.keys.tmp
    mv gossip.keys.tmp gossip.keys
    echo "made $dir/gossip.keys"
  fi
  chmod 600 gossip.keys
fi
