#!/usr/bin/env bash
# Prints, one a line, the installed packages that provide the shared libraries the given ELF
# files link directly (DT_NEEDED). The Dockerfile's runtime stages install exactly these and
# let apt add their dependencies, so the list follows the build (Debian's or Ubuntu's package
# names, LibTorch 1.13 or 2.x) instead of being kept by hand. Libraries no package owns (an
# unpacked LibTorch zip) are left out: the Dockerfile copies those.
# Usage: scripts/runtime_packages.sh ELF...
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 ELF..." >&2; exit 2; }

# owner PATH: the package(s) that installed PATH, or nothing. dpkg records the path as the
# package shipped it, /lib/... or /usr/lib/..., while ldd reports either (merged /usr).
owner() {
  local found
  found=$(dpkg -S "$1" 2>/dev/null || dpkg -S "${1#/usr}" 2>/dev/null || dpkg -S "/usr$1" 2>/dev/null) \
    || return 0
  # "libfoo1:amd64, libfoo1:i386: /usr/lib/..." -> libfoo1
  sed -n 's/^\([^/]*\): \/.*/\1/p' <<<"$found" | tr ',' '\n' | sed 's/^ *//; s/:.*//'
}

for elf in "$@"; do
  resolved=$(ldd "$elf")
  for lib in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
    # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)", or for the loader
    # "/lib64/ld-linux-x86-64.so.2 (0x...)".
    path=$(awk -v lib="$lib" '$1 == lib && $2 == "=>" { print $3 }
      substr($1, length($1) - length(lib)) == "/" lib { print $1 }' <<<"$resolved")
    if [[ $path != /* ]]; then
      # e.g. libcuda.so.1, which the NVIDIA container runtime mounts at run time.
      echo "warning: $elf needs $lib, which is not found here" >&2
      continue
    fi
    owner "$path"
  done
done | sort -u
