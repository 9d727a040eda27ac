#!/usr/bin/env bash
# Checks that two revisions behave bit for bit the same: builds `alexnet` from each (Debian's
# LibTorch, with the revision's own scripts/common.sh), runs the same seeded commands with both
# binaries (training from scratch, an exact resume, another recipe, fine-tuning, eval, predict,
# export, info, model-only inference, 2-process distributed training) and compares what they
# write: checkpoints, weights and logits byte for byte, metrics and JSON reports without their
# timing fields.
#
# Usage: scripts/compare_revisions.sh [--keep] [BEFORE_REV] [AFTER]
#   BEFORE_REV  a git revision (default: HEAD)
#   AFTER       a git revision, or `worktree` (the default): the working tree of this clone,
#               uncommitted changes included
#   --keep      keep the weight files of the runs even when all are identical (several GB)
#
# A revision is checked out (git worktree add --detach) into
# ${XDG_CACHE_HOME:-~/.cache}/alexnet/compare/<sha>, reused on later runs, and built in its
# build/ folder; the working tree is built in place, in its usual build folder. Only the
# `alexnet` target is built; ccache (installed by the project's scripts) makes rebuilding
# unchanged sources quick. Each binary runs its commands from its own folder
# (WORK/before, WORK/after) with the same relative paths, so the paths recorded in checkpoints
# are the same. Logs of every command are kept under WORK (printed at the start).
#
# Prints one line per compared output, `same` or `DIFFERENT (...)`, then `N of M outputs
# identical`. Exits 0 when all are identical and every command succeeded, 1 otherwise, 2 on a
# usage error.
set -euo pipefail

# usage: the Usage paragraph of this header.
usage() {
  sed -n '/^# Usage:/,/^#$/{/^#$/d; s/^# \{0,1\}//; p}' "${BASH_SOURCE[0]}"
}
die() { echo "error: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

keep=0
positional=()
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    --keep) keep=1 ;;
    -*) usage >&2; echo "error: unknown option '$arg'" >&2; exit 2 ;;
    *) positional+=("$arg") ;;
  esac
done
if [ ${#positional[@]} -gt 2 ]; then
  usage >&2; echo "error: expected at most two revisions, got ${#positional[@]}" >&2; exit 2
fi
before_rev=${positional[0]:-HEAD}
after_rev=${positional[1]:-worktree}

start_seconds=$SECONDS
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v git >/dev/null || die "git is not installed"
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null) \
  || die "$script_dir is not inside a git checkout"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/alexnet/compare
python=/usr/bin/python3
fmnist_dir=/usr/share/datasets/fashion-mnist   # Debian's dataset-fashion-mnist

# resolve REV: the commit's sha, or `worktree`.
resolve() {
  if [ "$1" = worktree ]; then echo worktree; return; fi
  git -C "$repo" rev-parse --verify --quiet "$1^{commit}" \
    || die "'$1' is not a revision of $repo (expected a commit, a branch, a tag, or 'worktree')"
}
before_sha=$(resolve "$before_rev")
after_sha=$(resolve "$after_rev")

work=$(mktemp -d "${TMPDIR:-/tmp}/alexnet-compare.XXXXXX")
mkdir -p "$work/logs" "$work/bin"
log "comparing $before_rev ($before_sha) with $after_rev ($after_sha)"
log "work folder (logs, outputs): $work"

# checkout SHA: prints the folder holding that revision's files (made or reused).
checkout() {
  local sha=$1 dir=$cache/$1
  if [ "$sha" = worktree ]; then echo "$repo"; return; fi
  if [ -e "$dir" ]; then
    local top head
    top=$(git -C "$dir" rev-parse --show-toplevel 2>/dev/null) || top=
    [ "$top" = "$(cd "$dir" && pwd -P)" ] || [ "$top" = "$dir" ] \
      || die "$dir exists but is not a git worktree: remove it"
    head=$(git -C "$dir" rev-parse HEAD)
    [ "$head" = "$sha" ] || die "$dir is at $head, not $sha: remove it (git worktree remove --force $dir)"
    [ -z "$(git -C "$dir" status --porcelain --untracked-files=no)" ] \
      || die "$dir has local changes: remove it (git worktree remove --force $dir)"
    log "reusing the checkout $dir" 
  else
    mkdir -p "$cache"
    log "checking out $sha into $dir"
    # -f: a folder deleted by hand stays registered until pruned.
    git -C "$repo" worktree add -f --detach "$dir" "$sha" >"$work/logs/worktree-$sha.log" 2>&1 \
      || { tail -n 5 "$work/logs/worktree-$sha.log" >&2; die "git worktree add $dir $sha failed"; }
  fi
  echo "$dir"
}

# build_alexnet LABEL SHA: builds the revision's `alexnet` with its own scripts/common.sh
# (install_packages, use_libtorch debian, build) and copies the binary to WORK/bin/LABEL, safe
# from later rebuilds of its folder.
build_alexnet() {
  local label=$1 sha=$2 src
  src=$(checkout "$sha")
  [ -f "$src/scripts/common.sh" ] || die "$sha: no scripts/common.sh in $src"
  local blog=$work/logs/build-$label.log
  log "building alexnet of $label ($src; log: $blog)"
  if ! (
    # The working tree uses its usual build folder (the environment may name it); a checkout,
    # its own build/.
    if [ "$sha" != worktree ]; then unset ALEXNET_BUILD ALEXNET_BUILD_DEBIAN; fi
    # (set -e does not apply inside an `if !`: every step says when it fails.)
    # shellcheck source=/dev/null
    source "$src/scripts/common.sh" || exit 1
    install_packages "${ALEXNET_BUILD_PACKAGES[@]}" dataset-fashion-mnist ccache python3 || exit 1
    use_libtorch debian || exit 1
    if [ "$sha" != worktree ]; then ALEXNET_BUILD=$src/build; fi
    # build() builds every target (tests too): the binary alone is enough here.
    # shellcheck disable=SC2317  # called by build()
    cmake() {
      if [ "${1:-}" = --build ]; then command cmake "$1" "$2" --target alexnet "${@:3}"
      else command cmake "$@"; fi
    }
    build || exit 1
    echo "$ALEXNET_BUILD" >"$work/logs/build-$label.dir"
  ) >"$blog" 2>&1; then
    tail -n 25 "$blog" | sed 's/^/    /' >&2
    die "building $label ($sha) failed; the log: $blog"
  fi
  local bdir bin
  bdir=$(cat "$work/logs/build-$label.dir")
  bin=$bdir/app/alexnet
  [ -x "$bin" ] || bin=$(find "$bdir" -maxdepth 3 -type f -name alexnet -perm -u+x | head -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then die "building $label: no alexnet binary under $bdir"; fi
  cp "$bin" "$work/bin/$label"
  # Gloo: whether --distributed works on the CPU.
  if grep -q '^ALEXNET_HAVE_GLOO_HEADERS:INTERNAL=1' "$bdir/CMakeCache.txt" 2>/dev/null; then
    touch "$work/bin/$label.gloo"
  fi
  log "$label: $("$work/bin/$label" --version 2>&1 | head -n 1)"
}

build_alexnet before "$before_sha"
if [ "$after_sha" = "$before_sha" ]; then
  log "after is the same commit: using the same binary"
  cp "$work/bin/before" "$work/bin/after"
  [ ! -e "$work/bin/before.gloo" ] || touch "$work/bin/after.gloo"
else
  build_alexnet after "$after_sha"
fi
[ -x "$python" ] || die "$python is missing (Debian: apt-get install python3)"
[ -f "$fmnist_dir/train-images-idx3-ubyte.gz" ] \
  || die "no Fashion-MNIST in $fmnist_dir (Debian: apt-get install dataset-fashion-mnist)"

# The comparisons, in Python: bytes (with the first differing offset, the zip entry and the
# tensor it belongs to, or the first differing line of a text file), JSON and JSON lines
# without the named keys (with the first differing line).
cat >"$work/compare.py" <<'EOF'
import collections, json, os, pickle, sys, zipfile

def missing(a, b):
    gone = [side for side, p in (("before", a), ("after", b)) if not os.path.isfile(p)]
    if gone:
        return "missing in " + " and ".join(gone) + " (see the failed commands)"

def first_diff(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                n = min(len(ca), len(cb))
                block = next((k for k in range(0, n, 4096) if ca[k:k + 4096] != cb[k:k + 4096]), n)
                i = next((k for k in range(block, min(block + 4096, n)) if ca[k] != cb[k]), n)
                return offset + i
            if not ca:
                return None
            offset += len(ca)

class Stub:
    full = ""
    def __init__(self, *args, **kwargs):
        self.args = args
    def __setstate__(self, state):
        self.state = state

class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return type(name, (Stub,), {"full": module + "." + name})
    def persistent_load(self, pid):
        s = Stub(*pid)
        s.full = "storage"
        return s

def tensor_names(pkl_bytes):
    """storage key -> the first path (a.b.c) of a tensor using it, from a torch.save data.pkl."""
    names = {}
    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + [str(k)])
        elif isinstance(v, (list, tuple)):
            for k, x in enumerate(v):
                walk(x, path + [str(k)])
        elif isinstance(v, Stub):  # a tensor: _rebuild_tensor_v2(storage, offset, size, ...)
            storages = [x for x in v.args if isinstance(x, Stub) and x.full == "storage"]
            for x in storages:
                if len(x.args) > 2:
                    names.setdefault(str(x.args[2]), ".".join(path))
            if not storages:
                walk(list(v.args), path)
    walk(Unpickler(__import__("io").BytesIO(pkl_bytes)).load(), [])
    return names

def zip_where(path, offset):
    try:
        with zipfile.ZipFile(path) as z:
            infos = sorted(z.infolist(), key=lambda i: i.header_offset)
            hit = None
            for info in infos:
                if info.header_offset <= offset:
                    hit = info
            if hit is None:
                return ""
            where = f"; in zip entry {hit.filename}"
            head, _, key = hit.filename.rpartition("/data/")
            if head:
                try:
                    name = tensor_names(z.read(head + "/data.pkl")).get(key)
                    if name:
                        where += f" (tensor {name})"
                except Exception:
                    pass
            return where
    except (zipfile.BadZipFile, OSError):
        return ""

def text_lines(path):
    if os.path.getsize(path) > 50 << 20:
        return None
    data = open(path, "rb").read()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None

def line_diff(la, lb):
    """The first differing line, both versions from a little before the first differing column."""
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else "<end of file>"
        y = lb[i] if i < len(lb) else "<end of file>"
        if x != y:
            col = next((k for k in range(min(len(x), len(y))) if x[k] != y[k]), min(len(x), len(y)))
            lo = max(0, col - 50)
            cut = lambda s: ("..." if lo else "") + s[lo:lo + 130] + ("..." if len(s) > lo + 130 else "")
            return f"line {i + 1} column {col + 1}: before {cut(x)} | after {cut(y)}"
    return None

def compare_bytes(a, b):
    off = first_diff(a, b)
    if off is None:
        return None
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    msg = f"first difference at byte offset {off} (sizes {sa} and {sb})"
    la, lb = text_lines(a), text_lines(b)
    if la is not None and lb is not None:
        return msg + "; " + line_diff(la, lb)
    return msg + zip_where(a, off)

def drop(v, keys):
    if isinstance(v, dict):
        return {k: drop(x, keys) for k, x in v.items() if k not in keys}
    if isinstance(v, list):
        return [drop(x, keys) for x in v]
    return v

def json_lines(path, side, keys):
    """The file's JSON values (one per non-empty line: JSON lines, or one JSON object)."""
    out = []
    try:
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            if line.strip():
                out.append((n, drop(json.loads(line), keys)))
    except ValueError as e:  # UnicodeDecodeError too
        raise ValueError(f"{side}'s file is not JSON lines: {e}")
    if not out:
        raise ValueError(f"{side}'s file is empty")
    return out

def value_diff(x, y, path):
    """The path to the first difference between two JSON values, and the two values there."""
    if type(x) != type(y) or not isinstance(x, (dict, list)):
        return None if (type(x) == type(y) and x == y) else (path, x, y)
    if isinstance(x, list):
        for i in range(max(len(x), len(y))):
            if i >= len(x) or i >= len(y):
                return (f"{path}[{i}]", x[i] if i < len(x) else "<absent>", y[i] if i < len(y) else "<absent>")
            d = value_diff(x[i], y[i], f"{path}[{i}]")
            if d:
                return d
        return None
    for k in sorted(set(x) | set(y)):
        p = f"{path}.{k}" if path else k
        if k not in x or k not in y:
            return (p, x.get(k, "<absent>"), y.get(k, "<absent>"))
        d = value_diff(x[k], y[k], p)
        if d:
            return d
    return None

def compare_json(a, b, keys):
    try:
        la, lb = json_lines(a, "before", keys), json_lines(b, "after", keys)
    except ValueError as e:
        return str(e)
    for i in range(max(len(la), len(lb))):
        if i >= len(la) or i >= len(lb):
            return f"{len(la)} JSON values before, {len(lb)} after"
        d = value_diff(la[i][1], lb[i][1], "")
        if d:
            cut = lambda v: (lambda t: t if len(t) <= 100 else t[:97] + "...")(json.dumps(v))
            return f"line {la[i][0]}, {d[0] or 'the value'}: before {cut(d[1])}, after {cut(d[2])}"
    return None

def main():
    kind, a, b = sys.argv[1:4]
    keys = set(filter(None, (sys.argv[4] if len(sys.argv) > 4 else "").split(",")))
    why = missing(a, b)
    if why is None:
        why = compare_bytes(a, b) if kind == "bytes" else compare_json(a, b, keys)
    print("same" if why is None else "DIFFERENT (" + why + ")")
    return 0 if why is None else 1

sys.exit(main())
EOF

# A small Fashion-MNIST for validation during training and for `eval`: the first
# 500 training and 301 test images of Debian's (301: partial last batches, unequal distributed
# shards). Training itself reads Debian's whole dataset (the default --data).
"$python" - "$fmnist_dir" "$work/fmnist" <<'EOF' || die "could not write a small Fashion-MNIST into $work/fmnist"
import gzip, os, struct, sys
src, dst = sys.argv[1:3]
os.makedirs(dst)
for prefix, n in (("train", 500), ("t10k", 301)):
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        data = gzip.open(os.path.join(src, f"{prefix}-{kind}.gz"), "rb").read()
        magic = struct.unpack(">I", data[:4])[0]
        dims = (magic & 0xFF) - 1
        header = 8 + 4 * dims
        item = 1
        for i in range(dims):
            item *= struct.unpack(">I", data[8 + 4 * i: 12 + 4 * i])[0]
        with gzip.GzipFile(os.path.join(dst, f"{prefix}-{kind}.gz"), "wb", mtime=0) as f:
            f.write(data[:4] + struct.pack(">I", n) + data[8:header] + data[header: header + n * item])
EOF

# Photographs for predict (Debian's opencv-doc), a few of them (left01.jpg: grey).
photos=()
if [ -d /usr/share/doc/opencv-doc ]; then
  for name in squirrel_cls.jpg baboon.jpg fruits.jpg HappyFish.jpg left01.jpg; do
    p=$(find /usr/share/doc/opencv-doc -name "$name" -type f | sort | head -n 1)
    [ -n "$p" ] && photos+=("$p")
  done
  if [ ${#photos[@]} -eq 0 ]; then
    mapfile -t photos < <(find /usr/share/doc/opencv-doc -name '*.jpg' -type f | sort | head -n 4)
  fi
fi
[ ${#photos[@]} -gt 0 ] || log "skipped: predict (no *.jpg under /usr/share/doc/opencv-doc; Debian: opencv-doc)"

failed=()
# run SIDE NAME [--stdout FILE] -- ARGS...: `alexnet ARGS` in WORK/SIDE with SIDE's binary;
# stderr (and stdout unless --stdout) to WORK/logs/SIDE/NAME.log. A failure is recorded and
# its log's last lines printed.
run() {
  local side=$1 name=$2 stdout=""
  shift 2
  if [ "$1" = --stdout ]; then stdout=$2; shift 2; fi
  [ "$1" = -- ] && shift
  local logf=$work/logs/$side/$name.log rc=0 t0=$SECONDS
  mkdir -p "$work/logs/$side"
  printf '$ cd %s && alexnet %s\n' "$work/$side" "$*" >"$logf"
  if [ -n "$stdout" ]; then
    (cd "$work/$side" && timeout -k 10 900 "$work/bin/$side" "$@" >"$stdout" 2>>"$logf") || rc=$?
  else
    (cd "$work/$side" && timeout -k 10 900 "$work/bin/$side" "$@" >>"$logf" 2>&1) || rc=$?
  fi
  if [ $rc -ne 0 ]; then
    failed+=("$side: $name (exit $rc; log $logf)")
    log "FAILED $side: alexnet $* (exit $rc); the last lines of $logf:"
    tail -n 15 "$logf" | sed 's/^/    /' >&2
  else
    log "$side: $name ($((SECONDS - t0)) s)"
  fi
}

# needs SIDE NAME FILE...: whether the inputs a command needs are there (else it is skipped:
# the command that should have made them has failed).
needs() {
  local side=$1 name=$2 f
  shift 2
  for f in "$@"; do
    if [ ! -f "$work/$side/$f" ]; then
      log "skipped $side: $name (no $f)"
      return 1
    fi
  done
}

# A free TCP port on 127.0.0.1 (free unless someone races us).
free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_distributed SIDE NAME ARGS...: 2 ranks of `alexnet train --distributed ARGS` on this
# machine with torchrun's environment (as scripts/launch.sh starts them).
run_distributed() {
  local side=$1 name=$2 port r rc=0 first=0
  shift 2
  port=$(free_port)
  mkdir -p "$work/logs/$side"
  local pids=() t0=$SECONDS
  for r in 0 1; do
    printf '$ cd %s && RANK=%s WORLD_SIZE=2 ... alexnet train --distributed %s\n' "$work/$side" "$r" "$*" \
      >"$work/logs/$side/$name-rank$r.log"
    (cd "$work/$side" && RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 \
       MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
       exec timeout -k 10 900 "$work/bin/$side" train --distributed "$@" \
       >>"$work/logs/$side/$name-rank$r.log" 2>&1) &
    pids+=($!)
  done
  for r in 0 1; do
    rc=0
    wait "${pids[$r]}" || rc=$?
    if [ $rc -ne 0 ]; then
      failed+=("$side: $name rank $r (exit $rc; log $work/logs/$side/$name-rank$r.log)")
      log "FAILED $side: $name rank $r: alexnet train --distributed $* (exit $rc); the last lines:"
      tail -n 15 "$work/logs/$side/$name-rank$r.log" | sed 's/^/    /' >&2
      first=1
    fi
  done
  [ $first -ne 0 ] || log "$side: $name ($((SECONDS - t0)) s)"
}

distributed=1
for side in before after; do
  help=$("$work/bin/$side" train --help 2>&1) || help=
  if [ ! -e "$work/bin/$side.gloo" ] || ! grep -q -- '--distributed' <<<"$help"; then
    distributed=0
  fi
done
[ $distributed -eq 1 ] || log "skipped: distributed training (a build without Gloo or --distributed)"

# The commands, the same for both sides.
run_side() {
  local side=$1
  mkdir -p "$work/$side"
  local cpu=(--device cpu --threads 2)
  local train=(train "${cpu[@]}" --deterministic --batch-size 16 --workers 2 --seed 3
               --print-freq 2 --val fashion-mnist:../fmnist)
  log "$side: running the commands in $work/$side"
  # 1. From scratch, the defaults (Debian's Fashion-MNIST).
  run "$side" train-out -- "${train[@]}" --epochs 2 --max-steps 8 --output out
  # 2. An exact resume: one epoch, then the second from its checkpoint.
  run "$side" train-res-epoch1 -- "${train[@]}" --epochs 1 --max-steps 8 --output res
  needs "$side" train-res-resume res/checkpoint.pth \
    && run "$side" train-res-resume -- "${train[@]}" --epochs 2 --max-steps 8 --output res \
         --resume res/checkpoint.pth
  # 3. Another recipe: the paper's architecture, 1 channel, step schedule by epoch with
  #    warmup, plain momentum, no smoothing or clipping, flips.
  run "$side" train-alt -- "${train[@]}" --arch alexnet2012 --in-channels 1 --lr 0.002 \
    --momentum 0.8 --weight-decay 1e-4 --nesterov=false --lr-scheduler step --lr-step-size 1 \
    --lr-gamma 0.5 --lr-warmup-epochs 1 --lr-update epoch --label-smoothing 0 \
    --clip-grad-norm 0 --dropout 0.5 --augment flip --precision fp32 --channels-last=off \
    --epochs 2 --max-steps 4 --output alt
  # 4. Fine-tuning from the first run's weights.
  needs "$side" train-ft out/model.pth \
    && run "$side" train-ft -- "${train[@]}" --weights out/model.pth --epochs 1 --max-steps 4 --output ft
  # 5. Evaluation (on the small dataset: Debian's whole test split takes a minute here): the
  #    first run's model on the test images, the 1-channel model on the training images.
  needs "$side" eval-val out/model.pth \
    && run "$side" eval-val --stdout eval-val.json -- eval "${cpu[@]}" --weights out/model.pth \
         --data fashion-mnist:../fmnist --json
  needs "$side" eval-alt-train alt/model.pth \
    && run "$side" eval-alt-train --stdout eval-alt-train.json -- eval "${cpu[@]}" \
         --weights alt/model.pth --data fashion-mnist:../fmnist --split train --batch-size 100 --json
  # 6. Predict on photographs (every class, a partial last batch).
  if [ ${#photos[@]} -gt 0 ] && needs "$side" predict-pth out/model.pth; then
    run "$side" predict-pth --stdout predict-pth.json -- predict "${cpu[@]}" --weights out/model.pth \
      --json --topk 0 --batch-size 3 "${photos[@]}"
  fi
  # 7. Export to torch.save and TorchScript; the archive through info and predict.
  if needs "$side" export out/model.pth; then
    run "$side" export-pth -- export --weights out/model.pth --output e.pth
    run "$side" export-pt -- export --weights out/model.pth --output e.pt
  fi
  if needs "$side" info-pt e.pt; then
    run "$side" info-pt --stdout info-e-pt.json -- info --json --weights e.pt
    [ ${#photos[@]} -eq 0 ] || run "$side" predict-pt --stdout predict-pt.json -- predict "${cpu[@]}" \
      --weights e.pt --json --topk 0 --batch-size 3 "${photos[@]}"
  fi
  # 8. Describe a training checkpoint.
  needs "$side" info-checkpoint out/checkpoint.pth \
    && run "$side" info-checkpoint --stdout info-checkpoint.json -- info --json --weights out/checkpoint.pth
  # 9. Model-only inference: seeded random weights and input, the logits written raw.
  run "$side" bench-infer --stdout bench-infer.json -- bench "${cpu[@]}" --mode infer --iters 1 \
    --warmup 0 --batch-size 4 --image-size 224 --logits lg.bin --json
  # 10. Two processes, Gloo.
  if [ $distributed -eq 1 ]; then
    run_distributed "$side" train-dist --device cpu --threads 1 --deterministic --batch-size 16 \
      --workers 2 --seed 3 --print-freq 2 --val fashion-mnist:../fmnist --dist-timeout 120 \
      --epochs 1 --max-steps 4 --output dist
  fi
}

run_side before
run_side after

total=0
identical=0
# compare KIND FILE [KEYS]: KIND bytes or json (JSON or JSON lines without the comma-separated
# KEYS); prints one line.
compare() {
  local kind=$1 file=$2 keys=${3:-} what result
  what=$file
  [ -z "$keys" ] || what="$file (without ${keys//,/, })"
  result=$("$python" "$work/compare.py" "$kind" "$work/before/$file" "$work/after/$file" "$keys") \
    || true
  [ -n "$result" ] || result="DIFFERENT (the comparison failed)"
  total=$((total + 1))
  [ "$result" != same ] || identical=$((identical + 1))
  printf '%-58s %s\n' "$what" "$result"
}

echo
echo "$before_rev ($before_sha) vs $after_rev ($after_sha); outputs in $work/{before,after}"
for run_dir in out res alt ft; do
  compare bytes "$run_dir/checkpoint.pth"
  compare bytes "$run_dir/model.pth"
  compare json "$run_dir/metrics.jsonl" img_per_s,train_seconds
done
compare json eval-val.json img_per_s
compare json eval-alt-train.json img_per_s
[ ${#photos[@]} -eq 0 ] || compare bytes predict-pth.json
compare bytes e.pth
compare bytes info-e-pt.json
[ ${#photos[@]} -eq 0 ] || compare bytes predict-pt.json
compare bytes info-checkpoint.json
compare bytes lg.bin
if [ $distributed -eq 1 ]; then
  compare bytes dist/checkpoint.pth
  compare bytes dist/model.pth
  compare json dist/metrics.jsonl img_per_s,train_seconds
fi

echo
echo "$identical of $total outputs identical"
if [ ${#failed[@]} -gt 0 ]; then
  echo "${#failed[@]} command(s) failed:"
  printf '  %s\n' "${failed[@]}"
fi
echo "logs: $work/logs; took $(((SECONDS - start_seconds) / 60))m$(((SECONDS - start_seconds) % 60))s"
if [ "$identical" -eq "$total" ] && [ ${#failed[@]} -eq 0 ]; then
  if [ $keep -eq 0 ]; then
    find "$work/before" "$work/after" -type f \( -name '*.pth' -o -name '*.pt' -o -name '*.bin' \) -delete
    echo "(all identical: the weight files were removed; --keep keeps them)"
  fi
  exit 0
fi
exit 1
