#!/usr/bin/env bash
# Makes sure the Docker engine has the base image deploy/Dockerfile builds
# FROM (its `ARG BASE_IMAGE=` default, debian:bookworm-slim). Where the engine
# can pull images it need not run at all; where it cannot (no registry
# reachable), this builds the image locally: a `debootstrap --variant=minbase
# bookworm` root filesystem from this machine's configured Debian package
# sources, trimmed like the slim images, `docker import`ed under that name.
# The same Dockerfile then builds here and anywhere else.
#
#   scripts/docker-base-image.sh            build the image if the engine lacks it
#   scripts/docker-base-image.sh --force    build it again and replace it
#   scripts/docker-base-image.sh NAME       another image name (or GEOKV_BASE_IMAGE)
#
# Needs: root, or sudo (debootstrap chroots and creates device nodes; apt
# installs debootstrap if it is missing); a Docker engine this user may use;
# a Debian bookworm machine whose apt sources (/etc/apt/sources.list or
# /etc/apt/sources.list.d/*.sources) name a mirror that is reachable. The
# mirror is read from that configuration at run time, never written here.
# The image's apt sources are copied from the same configuration, so apt
# works inside containers built from it. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

force=0
image=${GEOKV_BASE_IMAGE:-}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) force=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "docker-base-image: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) image=$1; shift ;;
  esac
done
if [[ -z $image ]]; then
  image=$(sed -n 's/^ARG BASE_IMAGE=\(.*\)$/\1/p' deploy/Dockerfile | head -n1)
  [[ -n $image ]] || { echo "docker-base-image: no ARG BASE_IMAGE= default in deploy/Dockerfile" >&2; exit 1; }
fi
suite=bookworm

say() { echo "docker-base-image: $*"; }
die() { echo "docker-base-image: $*" >&2; exit 1; }

command -v docker >/dev/null || die "needs the docker command line client"
docker info >/dev/null 2>&1 || die "needs a running Docker engine this user may use (docker info fails)"

if [[ $force -eq 0 ]] && docker image inspect "$image" >/dev/null 2>&1; then
  say "$image is present ($(docker image inspect -f '{{.Id}}' "$image" | cut -c1-19))"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "needs root or sudo: debootstrap chroots and creates device nodes"
  sudo_cmd=(sudo)
fi

# The apt source files in force: sources.list and sources.list.d/*.list,
# *.sources (apt ignores every other name there).
source_files=()
[[ -f /etc/apt/sources.list ]] && source_files+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] && source_files+=("$f")
done
[[ ${#source_files[@]} -gt 0 ]] || die "no apt sources configured in /etc/apt"

# Prints "URI KEYRING" for the first enabled `deb` source of $suite, from the
# one-line (.list) or deb822 (.sources) format. KEYRING is "-" when none is named.
find_mirror() {
  local f
  for f in "${source_files[@]}"; do
    if [[ $f == *.sources ]]; then
      awk -v suite="$suite" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uris != "") {
            split(uris, u, " "); print u[1], (signed == "" ? "-" : signed); found = 1; exit
          }
          types = suites = uris = signed = last = ""; enabled = "yes"
        }
        BEGIN { enabled = "yes" }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { if (last == "uris") uris = uris " " $1; next }
        {
          key = tolower(substr($0, 1, index($0, ":") - 1)); value = substr($0, index($0, ":") + 1)
          gsub(/^[ \t]+|[ \t]+$/, "", value); last = key
          if (key == "types") types = value
          else if (key == "uris") uris = value
          else if (key == "suites") suites = value
          else if (key == "enabled") enabled = tolower(value)
          else if (key == "signed-by") signed = value
        }
        END { if (!found) flush() }' "$f"
    else
      awk -v suite="$suite" '
        $1 == "deb" {
          signed = "-"; i = 2
          if ($2 ~ /^\[/) {
            for (; i <= NF; i++) {
              if ($i ~ /^\[?signed-by=/) { s = $i; sub(/^\[?signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
              if ($i ~ /\]$/) { i++; break }
            }
          }
          if ($(i + 1) == suite) { print $i, signed; exit }
        }' "$f"
    fi
  done | head -n1
}
read -r mirror keyring < <(find_mirror) || true
[[ -n ${mirror:-} ]] || die "no enabled 'deb' source for $suite in ${source_files[*]}"
say "building $image from $suite at the configured mirror $mirror"

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap (apt)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends debootstrap
fi

work=$(mktemp -d /var/tmp/geokv-base-XXXXXX)
root="$work/rootfs"
cleanup() {
  # debootstrap unmounts what it mounted; a failure halfway may leave some.
  local m
  for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    "${sudo_cmd[@]}" umount -l "$m" 2>/dev/null || true
  done
  "${sudo_cmd[@]}" rm -rf "$work"
}
trap cleanup EXIT

include=()
[[ $mirror == https:* ]] && include=(--include=ca-certificates)
keyring_args=()
[[ $keyring != "-" && -f $keyring ]] && keyring_args=(--keyring="$keyring")
start=$(date +%s)
say "debootstrap --variant=minbase $suite (log: $work/debootstrap.log)"
if ! "${sudo_cmd[@]}" debootstrap --variant=minbase "${include[@]}" "${keyring_args[@]}" \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi

# apt sources: the host's files that describe Debian $suite and whose
# keyrings the image has (a third-party source would break apt update there).
"${sudo_cmd[@]}" rm -f "$root/etc/apt/sources.list"
copied=0
for f in "${source_files[@]}"; do
  grep -Eq "(^|[[:space:]])$suite([[:space:]]|$)" "$f" || { say "not copying $f (no $suite source)"; continue; }
  missing=""
  for k in $(grep -Eio '(signed-by[:=][[:space:]]*)[^][:space:]]+' "$f" | sed -E 's/^[Ss]igned-[Bb]y[:=][[:space:]]*//'); do
    [[ $k == /* && ! -f $root$k ]] && missing+=" $k"
  done
  if [[ -n $missing ]]; then
    say "not copying $f: the image lacks its keyring(s)$missing"
    continue
  fi
  dest="$root/etc/apt/sources.list.d/$(basename "$f")"
  [[ $f == /etc/apt/sources.list ]] && dest="$root/etc/apt/sources.list"
  "${sudo_cmd[@]}" cp "$f" "$dest"
  copied=$((copied + 1))
  say "apt source in the image: ${dest#"$root"}"
done
[[ $copied -gt 0 ]] || die "no host apt source could be copied into the image"

# Trimmed like the slim images: no docs, man pages or translations, now or
# from later installs; no package lists or caches. dpkg skips its fsyncs
# (a failed image build is simply run again): it unpacks much faster on
# storage drivers like fuse-overlayfs.
"${sudo_cmd[@]}" tee "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" >/dev/null <<'EOF'
force-unsafe-io
EOF
"${sudo_cmd[@]}" tee "$root/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
"${sudo_cmd[@]}" tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
"${sudo_cmd[@]}" sh -c "
  find '$root/usr/share/doc' -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null
  find '$root/usr/share/doc' -mindepth 1 -type d -empty -delete 2>/dev/null
  rm -rf '$root'/usr/share/man/* '$root'/usr/share/info/* '$root'/usr/share/locale/* \
         '$root'/var/lib/apt/lists/* '$root'/var/cache/apt/* '$root'/var/cache/debconf/*-old \
         '$root'/var/log/*.log '$root'/debootstrap '$root'/tmp/* '$root'/var/tmp/*
  rm -f '$root/etc/resolv.conf' '$root/etc/hostname' '$root/etc/hosts'
  : > '$root/etc/machine-id'
" || true

say "docker import as $image"
"${sudo_cmd[@]}" tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $suite, by scripts/docker-base-image.sh" \
  - "$image" >/dev/null

say "checking that apt works in the image"
if docker run --rm "$image" sh -c 'apt-get update -qq && apt-cache policy bash | grep -q Candidate'; then
  say "apt works in $image"
else
  say "warning: apt-get update fails inside $image (containers may not reach the mirror)" >&2
fi
say "$image built in $(( $(date +%s) - start )) s: $(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
