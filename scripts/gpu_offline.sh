#!/bin/sh
# On an offline GPU node (docs/deploy.md, "An offline GPU node"): reassemble the parts `make gpu-bundle`
# wrote, check every part and every file against the manifest's sha256, install the wheels into one folder,
# write the environment wai and vLLM need there, and run `make gpu-check`'s steps from it on Llama 3 8B's
# architecture with random weights (configs/llama-3-8b-dummy.yaml). Needs only python3 (its standard
# library, with lzma) and POSIX tools; never the network. Exits 0 only when the check's verdict is pass.
#
#   sh gpu_offline.sh [--bundle DIR] [--target DIR] [--no-check] [-- GPU_CHECK_ARGS...]
#
#   --bundle DIR   the folder holding the parts and wai-gpu-bundle.manifest.json (default: this script's)
#   --target DIR   the install folder (default: DIR/install); replaced on a rerun
#   --no-check     install only; run the check later with the command the script prints
#   -- ARGS        more arguments for scripts/gpu_check.py (its report: TARGET/gpu-check/gpu-check.md)
#   PYTHON=...     the interpreter to install for and with (default: python3)
#   PIP_PYTHON_VERSION, PIP_PLATFORM, PIP_ONLY_BINARY=:all:   pip's own variables, to install for another
#                  Python than PYTHON's (the tests do, on a 3.11 machine); the script checks the same version
#
# The install uses `python3 -m pip install --no-index --no-deps --target` when pip is there; without pip it
# unpacks each wheel with the standard library's zipfile (the same files, but no console scripts: run
# `python3 -m server.cli` and `python3 -m vllm.entrypoints.cli.main`). A bundle that does not match its
# manifest (a part missing or corrupted, a wheel missing) is refused before anything is installed.
set -eu

PYTHON=${PYTHON:-python3}
BUNDLE_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
TARGET=
CHECK=yes
MANIFEST_NAME=wai-gpu-bundle.manifest.json
MARKER=.wai-gpu-bundle
CHECK_CONFIG=configs/llama-3-8b-dummy.yaml

fail() {
    echo "gpu_offline: $*" >&2
    exit 1
}

step() {
    printf '\n== %s\n' "$*"
}

while [ $# -gt 0 ]; do
    case $1 in
        --bundle) [ $# -ge 2 ] || fail "--bundle needs a folder"; BUNDLE_DIR=$2; shift 2 ;;
        --target) [ $# -ge 2 ] || fail "--target needs a folder"; TARGET=$2; shift 2 ;;
        --no-check) CHECK=no; shift ;;
        --) shift; break ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) fail "unknown argument: $1 (see --help)" ;;
    esac
done
[ -f "$BUNDLE_DIR/$MANIFEST_NAME" ] || fail "no $MANIFEST_NAME in $BUNDLE_DIR: copy it beside the parts"
BUNDLE_DIR=$(CDPATH='' cd -- "$BUNDLE_DIR" && pwd)
TARGET=${TARGET:-$BUNDLE_DIR/install}
mkdir -p -- "$(dirname -- "$TARGET")"
TARGET=$(CDPATH='' cd -- "$(dirname -- "$TARGET")" && pwd)/$(basename -- "$TARGET")
STAGE=$TARGET.installing
WORK=$TARGET.unpacking
trap 'rm -rf -- "$WORK" "$STAGE"' EXIT
command -v "$PYTHON" >/dev/null 2>&1 || fail "no $PYTHON on this node (set PYTHON=/path/to/python3.12)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' || fail "$PYTHON is older than Python 3.8"

# The checks, in Python's standard library: `bundle_tool COMMAND ARGS...`.
bundle_tool() {
    "$PYTHON" - "$@" <<'PY'
import hashlib, json, os, sys, tarfile, zipfile
from pathlib import Path

MIB = 1024 * 1024


def refuse(message):
    print(f"gpu_offline: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def check(path, entry, label):
    """`path` has the manifest entry's size and sha256, or the bundle is refused naming it."""
    if not path.is_file():
        refuse(f"{label}: missing from {path.parent}")
    if path.stat().st_size != entry["size"]:
        refuse(f"{label}: {path.stat().st_size} bytes, the manifest says {entry['size']} (copy it again)")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        refuse(f"{label}: sha256 {digest[:16]}... does not match the manifest's {entry['sha256'][:16]}... "
               "(corrupted: copy it again)")


def python_ok(manifest):
    """The interpreter the wheels are for (PIP_PYTHON_VERSION, as pip reads it, may name another) and lzma."""
    wanted = manifest["python"]
    have = os.environ.get("PIP_PYTHON_VERSION") or "%d.%d" % sys.version_info[:2]
    if have != wanted:
        refuse(f"this bundle's wheels are for Python {wanted}, {sys.executable} is {have}: set PYTHON=python{wanted}")
    try:
        import lzma  # noqa: F401  (FlashAttention-3 travels LZMA-compressed inside vLLM's wheel)
    except ImportError:
        refuse(f"{sys.executable} has no lzma module, needed to unpack vLLM's wheel")
    print(f"Python {sys.version.split()[0]} at {sys.executable}, installing for Python {wanted}")


def verify_parts(manifest, bundle):
    for part in manifest["parts"]:
        check(bundle / part["name"], part, f"part {part['name']}")
    print(f"{len(manifest['parts'])} parts match the manifest")


def unpack(manifest, bundle, work):
    """Join the parts into the archive, check it, and extract exactly the manifest's files."""
    work.mkdir(parents=True)
    archive = work / manifest["archive"]["name"]
    with open(archive, "wb") as out:
        for part in manifest["parts"]:
            with open(bundle / part["name"], "rb") as f:
                while chunk := f.read(MIB):
                    out.write(chunk)
    check(archive, manifest["archive"], f"the parts joined ({archive.name})")
    listed = {f["path"] for f in manifest["files"]}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name not in listed or not member.isfile():
                refuse(f"the archive holds {member.name}, which the manifest does not list")
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, work, filter="data")
            else:
                tar.extract(member, work)
    archive.unlink()
    for entry in manifest["files"]:
        path = work / entry["path"]
        if not path.is_file():
            refuse(f"{entry['path']} ({entry['role']}): listed in the manifest, missing from the bundle")
        check(path, entry, f"{entry['path']} ({entry['role']})")
    print(f"{len(manifest['files'])} files match the manifest")


def unzip_wheels(manifest, work, target):
    """What `pip install --target` does with these wheels: the packages and their dist-info at the top,
    each wheel's .data/purelib and platlib there too, its .data/scripts in bin/."""
    for entry in manifest["files"]:
        with zipfile.ZipFile(work / entry["path"]) as wheel:
            for info in wheel.infolist():
                parts = info.filename.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib", "scripts"):
                        continue
                    parts = (["bin"] if parts[1] == "scripts" else []) + parts[2:]
                if info.is_dir() or ".." in parts or not parts[0]:
                    continue
                dest = target.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(info) as src, open(dest, "wb") as out:
                    while chunk := src.read(MIB):
                        out.write(chunk)
                mode = info.external_attr >> 16
                if mode & 0o111 or parts[0] == "bin":
                    dest.chmod(0o755)
    print(f"unpacked {len(manifest['files'])} wheels into {target}")


command, bundle = sys.argv[1], Path(sys.argv[2])
manifest = json.loads((bundle / "wai-gpu-bundle.manifest.json").read_text())
if command == "python":
    python_ok(manifest)
elif command == "parts":
    verify_parts(manifest, bundle)
elif command == "unpack":
    unpack(manifest, bundle, Path(sys.argv[3]))
elif command == "unzip":
    unzip_wheels(manifest, Path(sys.argv[3]), Path(sys.argv[4]))
PY
}

# A folder this script did not install is never replaced.
check_target() {
    if [ -e "$TARGET" ] && [ ! -f "$TARGET/$MARKER" ]; then
        fail "$TARGET exists and is not an install of this script: choose another --target"
    fi
}

replace_target() {
    check_target
    rm -rf -- "$TARGET"
    mv -- "$STAGE" "$TARGET"
}

install_wheels() {
    rm -rf -- "$STAGE"
    mkdir -p -- "$STAGE"
    if "$PYTHON" -m pip --version >/dev/null 2>&1; then
        echo "with $("$PYTHON" -m pip --version | cut -d' ' -f1-2): pip install --no-index --no-deps --target"
        "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$STAGE" "$WORK"/wheels/*.whl
    else
        echo "$PYTHON has no pip: unpacking the wheels with the standard library's zipfile instead"
        bundle_tool unzip "$BUNDLE_DIR" "$WORK" "$STAGE"
    fi
    cp -- "$BUNDLE_DIR/$MANIFEST_NAME" "$STAGE/$MARKER"
    replace_target
}

# Source it before running wai or vLLM from the install.
write_env() {
    quoted=$(printf '%s' "$TARGET" | sed "s/'/'\\\\''/g")
    cat >"$TARGET/env.sh" <<EOF
# Written by gpu_offline.sh: \`. $TARGET/env.sh\` before running wai or vLLM from this install.
export PYTHONPATH='$quoted'\${PYTHONPATH:+:\$PYTHONPATH}
# FlashInfer is not in the bundle: without this, vLLM's sampler imports it and the worker fails.
export VLLM_USE_FLASHINFER_SAMPLER=0
EOF
    echo "wrote $TARGET/env.sh"
}

# `make gpu-check`'s steps, from the install: the node's wai wheel carries scripts/gpu_check*.py, benchmarks/
# and configs/ laid out as in the repository. A node without a GPU, or an install that does not import, ends
# with a fail verdict and its reason, never a pass.
check_command() {
    printf '. %s/env.sh && cd %s && %s scripts/gpu_check.py --config %s --out %s/gpu-check' \
        "$TARGET" "$TARGET" "$PYTHON" "$CHECK_CONFIG" "$TARGET"
}

run_gpu_check_steps() {
    if [ "$CHECK" = no ]; then
        echo "GPU check: not run (--no-check). The install is ready; to check it: $(check_command)"
        return 0
    fi
    echo "$(check_command) $*"
    (
        . "$TARGET/env.sh"
        cd "$TARGET"
        "$PYTHON" scripts/gpu_check.py --config "$CHECK_CONFIG" --out "$TARGET/gpu-check" "$@"
    )
}

check_target
step "Python"
bundle_tool python "$BUNDLE_DIR"
step "Parts"
bundle_tool parts "$BUNDLE_DIR"
step "Reassemble and verify"
rm -rf -- "$WORK"
bundle_tool unpack "$BUNDLE_DIR" "$WORK"
step "Install into $TARGET"
install_wheels
write_env
step "GPU check"
run_gpu_check_steps "$@"
