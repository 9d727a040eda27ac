#!/usr/bin/env bash
# Builds the CPU image from the Dockerfile with buildah (no Docker engine needed) and runs the
# CLI inside it: help, a short train writing to a host folder, export, predict on a photograph,
# eval, info, bench, bad input (read-only output folder, missing weights, unknown flag), and that
# the container's exit status is the CLI's. Prints PASS/FAIL per check and exits 1 on any failure.
# Run as root (as CI does). Installs buildah, podman, debootstrap, opencv-doc when missing; when
# debian:bookworm-slim is not in local storage, makes it with debootstrap from this machine's
# Debian mirror. Re-runs reuse that base image and buildah's cached layers.
# Usage: scripts/docker_smoke.sh        (ALEXNET_IMAGE names the image; default alexnet)
set -euo pipefail
source "$(dirname "$0")/common.sh"

image=${ALEXNET_IMAGE:-alexnet}
base=docker.io/library/debian:bookworm-slim
photo=/usr/share/doc/opencv-doc/examples/data/squirrel_cls.jpg
start=$SECONDS

install_packages buildah podman debootstrap opencv-doc

# sources_uri PATTERN: the first enabled apt source URI on this machine matching PATTERN.
sources_uri() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^[:space:]]+' \
    | grep -E "$1" | head -n 1 || true
}

# make_base: debian:bookworm-slim from debootstrap (minbase), slimmed the way Debian's official
# slim image is (no docs but copyright files, no man pages or translations, no apt lists), so
# the measured image size is close to what `docker build` gives on top of the real one.
make_base() {
  local mirror security root
  mirror=$(sources_uri '/debian/?$')
  mirror=${mirror:-http://deb.debian.org/debian}
  security=$(sources_uri '/debian-security/?$')
  root=$(mktemp -d /var/tmp/alexnet-rootfs.XXXXXX)
  trap 'rm -rf "$root" "$root.log"' EXIT
  log "making $base: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; return 1; }
  rm -f "$root.log"

  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  find "$root/usr/share/doc" -type l -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/{man,info,groff,lintian}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$mirror"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n' "$security"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } >"$root/etc/apt/sources.list.d/debian.sources"

  tar -C "$root" -c . | podman import --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$root"
  trap - EXIT
}

if podman image exists "$base"; then
  log "using $base from local storage"
else
  make_base
fi

version=$(sed -n 's/^project(alexnet VERSION \([0-9.]*\).*/\1/p' "$ALEXNET_ROOT/CMakeLists.txt")
log "building $image (version $version): buildah bud --isolation chroot --pull-never --layers"
build_start=$SECONDS
buildah bud --isolation chroot --pull-never --layers --build-arg VERSION="$version" \
  -t "$image" "$ALEXNET_ROOT" >&2
build_s=$((SECONDS - build_start))
size=$(podman image inspect --format '{{.Size}}' "$image")
base_size=$(podman image inspect --format '{{.Size}}' "$base")
log "image $image: $((size / 1000000)) MB (base $base: $((base_size / 1000000)) MB), built in ${build_s}s"

# ---- checks -----------------------------------------------------------------------------------

work=$(mktemp -d /var/tmp/alexnet-smoke.XXXXXX)
ctr=""
cleanup() {
  if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
out=$work/out        # mounted read-write at /out
readonly_dir=$work/ro  # mounted read-only at /ro
log_file=$work/log
status=0

pass() { echo "PASS  $1"; passed=$((passed + 1)); }
fail() {
  echo "FAIL  $1: $2"
  [ -s "$log_file" ] && tail -n 15 "$log_file" | sed 's/^/      | /'
  failed=$((failed + 1))
}

# in_ctr CMD...: runs CMD in the container with the mounts; output in $log_file, exit in $status.
in_ctr() {
  status=0
  buildah run --isolation chroot -v "$out:/out" -v "$readonly_dir:/ro:ro" \
    -v "$photo:/data/photo.jpg:ro" "$ctr" -- "$@" >"$log_file" 2>&1 || status=$?
}

# expect NAME STATUS REGEX: the last in_ctr exited with STATUS and printed a line matching REGEX.
expect() {
  if [ "$status" -ne "$2" ]; then
    fail "$1" "exit status $status, expected $2"
  elif ! grep -qE -- "$3" "$log_file"; then
    fail "$1" "no output line matches /$3/"
  else
    pass "$1"
  fi
}

# one_error NAME: the last in_ctr printed one `error:` line and no sign of a crash (an uncaught
# exception's message, an abort, a LibTorch stack trace).
one_error() {
  local errors
  errors=$(grep -c '^error: ' "$log_file" || true)
  if grep -qE 'terminate called|Aborted|Segmentation fault|Exception raised from|frame #[0-9]' \
    "$log_file"; then
    fail "$1" "crashed instead of reporting an error"
  elif [ "$errors" -ne 1 ]; then
    fail "$1" "$errors error: lines, expected 1"
  else
    pass "$1"
  fi
}

# Image configuration, as `docker run` would use it.
config() { podman image inspect --format "$1" "$image"; }
want_config() {
  local got
  got=$(config "$2")
  : >"$log_file"
  if [ "$got" = "$3" ]; then
    pass "config $1 = $3"
  else
    fail "config $1" "got '$got', expected '$3'"
  fi
}
want_config entrypoint '{{json .Config.Entrypoint}}' '["alexnet"]'
want_config cmd '{{json .Config.Cmd}}' '["--help"]'
want_config user '{{.Config.User}}' 'alexnet'
want_config workdir '{{.Config.WorkingDir}}' '/out'
# shellcheck disable=SC2016  # Go templates, not shell expansions
want_config volume '{{range $k, $v := .Config.Volumes}}{{$k}}{{end}}' '/out'
want_config version-label '{{index .Config.Labels "org.opencontainers.image.version"}}' "$version"
# shellcheck disable=SC2016
labels=" $(config '{{range $k, $v := .Config.Labels}}{{$k}} {{end}}')"
missing=""
: >"$log_file"
for l in title description source licenses version; do
  [[ $labels == *" org.opencontainers.image.$l "* ]] || missing+=" $l"
done
if [ -z "$missing" ]; then pass "OCI labels present"; else fail "OCI labels" "missing:$missing"; fi

ctr=$(buildah from --pull-never "$image")
# buildah run mounts the image's VOLUME /out over a -v given for the same path (docker run does
# the opposite); dropping the volume from this working container lets the host folder through.
buildah config --volume /out- "$ctr"
mkdir -p "$out" "$readonly_dir"
uid=$(buildah run --isolation chroot "$ctr" -- id -u)
chown "$uid" "$out" "$readonly_dir"

in_ctr sh -c 'id -un; pwd'
expect "runs as the non-root user" 0 '^alexnet$'
expect "runs in the working directory /out" 0 '^/out$'
in_ctr sh -c 'ldd /usr/local/bin/alexnet; readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3'
if grep -q 'not found' "$log_file"; then fail "shared libraries" "missing"; else
  expect "shared libraries resolve, BLAS is OpenBLAS" 0 'openblas.*/libblas\.so\.3$'
fi

in_ctr alexnet --help
expect "alexnet --help (the ENTRYPOINT + CMD above)" 0 '^usage: alexnet <command>'
in_ctr alexnet --version
expect "alexnet --version names Debian's LibTorch and its BLAS" 0 '^alexnet .*LibTorch 1\.13.*OpenBLAS'
expect "alexnet --version names the CPU class and what auto chooses" 0 '^cpu: .*: class .*; auto: training '
in_ctr alexnet train --no-such-flag
expect "unknown flag is a usage error" 2 'no-such-flag'

in_ctr alexnet train --output /out/run --epochs 1 --max-steps 5 --batch-size 32 --print-freq 1
expect "train (Fashion-MNIST from the image, 5 steps)" 0 '^\[.*\] done: '
for f in checkpoint.pth model.pth metrics.jsonl; do
  if [ -s "$out/run/$f" ]; then pass "train wrote $f to the host"; else
    fail "train output" "$out/run/$f missing or empty"
  fi
done

in_ctr alexnet export --weights /out/run/model.pth --output /out/run/model.pt
if [ -s "$out/run/model.pt" ]; then expect "export to TorchScript" 0 '.'; else
  fail "export" "$out/run/model.pt missing"
fi
# docker run --user "$(id -u):$(id -g)", for a host folder that uid 1000 cannot write.
mkdir -p "$out/other-user"
chown 4321:4321 "$out/other-user"
status=0
buildah run --isolation chroot --user 4321:4321 -v "$out:/out" "$ctr" -- \
  alexnet export --weights /out/run/model.pth --output /out/other-user/model.pth >"$log_file" 2>&1 \
  || status=$?
if [ "$(stat -c %u "$out/other-user/model.pth" 2>/dev/null)" = 4321 ]; then
  expect "export as another user (--user 4321:4321)" 0 '.'
else
  fail "export as another user" "$out/other-user/model.pth missing or not owned by 4321"
fi

in_ctr alexnet predict --weights /out/run/model.pt --topk 3 /data/photo.jpg
expect "predict a photograph" 0 '^ +1\. +[0-9.]+%'
in_ctr alexnet eval --weights /out/run/model.pth
expect "eval on Fashion-MNIST (10,000 test images)" 0 'top-1 [0-9.]+%'
in_ctr alexnet info --weights /out/run/checkpoint.pth
expect "info" 0 'parameters'
in_ctr alexnet bench --data fashion-mnist --limit 512 --repeat 1
expect "bench (data loading)" 0 'img/s'

# serve as docs/docker.md runs it (--host 0.0.0.0), asked over loopback inside the container with
# bash's /dev/tcp (the image has no HTTP client): /ping until ready, one photograph, SIGTERM.
# shellcheck disable=SC2016  # expanded by the container's bash
in_ctr bash -c '
  alexnet serve --weights /out/run/model.pth --host 0.0.0.0 --port 8080 2>/out/serve.log & pid=$!
  http() { exec 3<>/dev/tcp/127.0.0.1/8080 || return 1; cat >&3; cat <&3; exec 3<&-; }
  for _ in $(seq 120); do
    printf "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" | http 2>/dev/null | grep -q "200 OK" && break
    sleep 0.5
  done
  { printf "POST /predictions/alexnet?topk=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    printf "Content-Length: %s\r\n\r\n" "$(stat -c %s /data/photo.jpg)"; cat /data/photo.jpg; } | http
  echo; kill -TERM $pid; wait $pid; echo "serve exit $?"; cat /out/serve.log'
expect "serve: a photograph POSTed over loopback in the container" 0 '^\{"image": "body", "top": \[\{"index"'
expect "serve: SIGTERM drains, exit 0" 0 '^serve exit 0$'

in_ctr alexnet train --output /ro/run --epochs 1 --max-steps 1
expect "read-only output folder: error line, exit 1" 1 '^error: '
one_error "read-only output folder: one error line, no crash"
in_ctr alexnet predict --weights /out/no-such.pth /data/photo.jpg
expect "missing weights: error line, exit 1" 1 '^error: .*no-such\.pth'
one_error "missing weights: one error line, no crash"

# The container's exit status is the CLI's: compare with the status seen inside.
for args in "--help" "train --no-such-flag" "train --output /ro/run --max-steps 1"; do
  # shellcheck disable=SC2086  # word splitting of $args is intended
  in_ctr alexnet $args
  outer=$status
  # shellcheck disable=SC2086
  in_ctr sh -c 'alexnet "$@" >/dev/null 2>&1; echo "inner $?"' sh $args
  inner=$(sed -n 's/^inner //p' "$log_file")
  if [ "$outer" = "$inner" ]; then pass "exit status passes through (alexnet $args: $outer)"; else
    fail "exit status of alexnet $args" "container $outer, CLI $inner"
  fi
done

echo
echo "image $image: $((size / 1000000)) MB; build ${build_s}s; total $((SECONDS - start))s"
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
