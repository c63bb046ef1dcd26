"""`make gpu-bundle` and `scripts/gpu_offline.sh`: the parts fit the transfer, every locked wheel, wai's own
and the slim vLLM 0.26.0 travel (never weights), the node script reassembles, verifies and installs them,
and `import vllm` and wai's modules then resolve from the install; a corrupted or missing part and a
missing wheel are refused, naming what is wrong, before anything is installed."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

from tests.bundle.helpers import ROOT, Bundle, Install, gpu_bundle, run_node_script

MIB = 1024 * 1024

# wai's modules a node imports first, none of which needs vLLM's engine to start.
WAI_MODULES = ("server.config", "server.protocol.openai", "server.protocol.workers_ai", "server.errors", "server.app")


def test_parts_fit_the_transfer(bundle: Bundle) -> None:
    sizes = [bundle.part(i).stat().st_size for i in range(len(bundle.manifest["parts"]))]
    print(f"parts: {[round(s / MIB, 2) for s in sizes]} MiB, built in {bundle.build_seconds:.1f} s")
    assert all(size <= 60 * MIB for size in sizes)
    assert sum(sizes) <= 130 * MIB
    assert sum(sizes) == bundle.manifest["archive"]["size"]
    assert [p["size"] for p in bundle.manifest["parts"]] == sizes
    assert sorted(p.name for p in bundle.dir.iterdir()) == sorted(
        [gpu_bundle.MANIFEST, "gpu_offline.sh", *(p["name"] for p in bundle.manifest["parts"])]
    )


def test_every_locked_wheel_wai_and_the_slim_engine_travel(bundle: Bundle) -> None:
    files = bundle.manifest["files"]
    names = [Path(f["path"]).name for f in files]
    for pin in gpu_bundle.read_lock():
        (match,) = [n for n in names if gpu_bundle.normalize(n.split("-")[0]) == pin.name]
        assert match.split("-")[1] == pin.version
    roles = {f["role"] for f in files}
    assert roles == {"engine", "dependency", "tokenizer", "wai"}
    (engine,) = [f for f in files if f["role"] == "engine"]
    assert engine["size"] < bundle.manifest["engine"]["published_wheel"]["size"] / 3
    assert [n for n in names if n.startswith("wai-")] == ["wai-0.1.0-py3-none-any.whl"]
    assert len(files) == len(gpu_bundle.read_lock()) + 1


def test_the_bundle_holds_wheels_and_no_weights(bundle: Bundle, tmp_path: Path) -> None:
    unpacked = reassemble(bundle, tmp_path)
    for entry in bundle.manifest["files"]:
        path = unpacked / entry["path"]
        assert path.suffix == ".whl"
        assert gpu_bundle.sha256_of(path) == entry["sha256"]
        with zipfile.ZipFile(path) as wheel:
            assert not [n for n in wheel.namelist() if n.endswith(gpu_bundle.WEIGHT_SUFFIXES)], path.name


def test_the_slim_engine_wheel_keeps_a_true_record(bundle: Bundle, tmp_path: Path) -> None:
    """Only the guarded members go, FlashAttention-3 is LZMA, and RECORD names every member with its hash."""
    unpacked = reassemble(bundle, tmp_path)
    (engine,) = [f for f in bundle.manifest["files"] if f["role"] == "engine"]
    with zipfile.ZipFile(unpacked / engine["path"]) as wheel:
        names = wheel.namelist()
        assert not [n for n in names if any(d.matches(n) for d in gpu_bundle.DROPS)]
        assert "vllm/_C_stable_libtorch.abi3.so" in names
        for member in gpu_bundle.LZMA_MEMBERS:
            assert wheel.getinfo(member).compress_type == zipfile.ZIP_LZMA
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        rows = {row[0]: row[1:] for row in csv.reader(wheel.read(record).decode().splitlines())}
        assert set(rows) == set(names)
        for name in names:
            if name != record:
                data = wheel.read(name)
                digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert rows[name] == [f"sha256={digest}", str(len(data))], name


def test_the_engine_wheel_alone_is_the_bundles(bundle: Bundle) -> None:
    """`gpu_bundle.py --engine-wheel`, for checks of wai against vLLM 0.26's modules, gives the bundle's wheel."""
    (engine,) = [f for f in bundle.manifest["files"] if f["role"] == "engine"]
    result = subprocess.run(
        [sys.executable, "scripts/gpu_bundle.py", "--engine-wheel"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    wheel = Path(result.stdout.strip())
    assert wheel.name == Path(engine["path"]).name
    assert gpu_bundle.sha256_of(wheel) == engine["sha256"]


def test_the_node_script_installs_wai_on_vllm_0_26(installed: Install, bundle: Bundle) -> None:
    print(f"node script: {installed.seconds:.1f} s")
    assert f"{len(bundle.manifest['parts'])} parts match the manifest" in installed.output
    assert "GPU check: not run" in installed.output
    env = (installed.target / "env.sh").read_text()
    assert f"export PYTHONPATH='{installed.target}'" in env
    assert "export VLLM_USE_FLASHINFER_SAMPLER=0" in env


def test_vllm_and_wai_resolve_from_the_install(installed: Install, tmp_path: Path) -> None:
    """With the install ahead of the venv on PYTHONPATH, `import vllm` is the slim 0.26.0 and `server` is the
    wai wheel's. Packages built for CPython 3.12 alone cannot load on this 3.11 venv: those come from the venv
    (the same releases, or for xgrammar and tvm-ffi newer ones)."""
    view = path_view_without_cpython312_builds(installed.target, tmp_path / "view")
    probe = f"""
import importlib, importlib.metadata as md, json, os
import vllm
from vllm.v1.engine.async_llm import AsyncLLM
wai = md.distribution("wai")
print(json.dumps({{
    "vllm": os.path.realpath(vllm.__file__),
    "vllm_version": vllm.__version__,
    "vllm_dist": [md.version("vllm"), os.path.realpath(md.distribution("vllm").locate_file(""))],
    "wai_dist": os.path.realpath(wai.locate_file("")),
    "wai_plugins": [ep.value for ep in wai.entry_points if ep.group == "vllm.general_plugins"],
    "modules": {{m: os.path.realpath(importlib.import_module(m).__file__) for m in {WAI_MODULES!r}}},
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # not the worktree, whose `server` would win
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(view)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    target = str(installed.target)
    assert found["vllm"] == f"{target}/vllm/__init__.py"
    assert found["vllm_version"] == "0.26.0"
    assert found["vllm_dist"] == ["0.26.0", str(view)]  # the view holds links into the install only
    assert found["wai_dist"] == str(view)
    assert found["wai_plugins"] == ["server.engine.vllm_fixes:apply"]
    for module, path in found["modules"].items():
        assert path == f"{target}/{module.replace('.', '/')}.py"


def test_without_pip_the_wheels_are_unpacked_to_the_same_files(
    installed: Install, bundle: Bundle, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    target = tmp_path / "install"
    result = run_node_script(bundle.dir, target, python=str(bare / "bin" / "python"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "has no pip: unpacking the wheels with the standard library's zipfile" in result.stdout
    assert installed_files(target) == installed_files(installed.target)


def test_a_corrupted_part_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    copy = copy_bundle(bundle, tmp_path / "bundle")
    broken = copy / bundle.manifest["parts"][-1]["name"]
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    error = refused(copy, tmp_path / "install")
    assert f"part {broken.name}: sha256 " in error
    assert "does not match the manifest" in error


def test_a_missing_part_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    copy = copy_bundle(bundle, tmp_path / "bundle")
    missing = copy / bundle.manifest["parts"][-1]["name"]
    missing.unlink()
    assert f"part {missing.name}: missing from {copy}" in refused(copy, tmp_path / "install")


def test_a_missing_wheel_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    """Parts that are whole but pack one wheel fewer than the manifest lists."""
    unpacked = reassemble(bundle, tmp_path / "unpacked")
    files = bundle.manifest["files"]
    (left_out,) = [f for f in files if Path(f["path"]).name.startswith("xgrammar-")]
    kept = [f for f in files if f is not left_out]
    copy = tmp_path / "bundle"
    copy.mkdir()
    shutil.copy2(bundle.dir / "gpu_offline.sh", copy)
    sources = {f["path"]: unpacked / f["path"] for f in kept}
    parts = gpu_bundle.write_parts(kept, sources, copy, 60 * MIB)
    (copy / gpu_bundle.MANIFEST).write_text(json.dumps({**bundle.manifest, **parts}))
    error = refused(copy, tmp_path / "install")
    assert f"{left_out['path']} (dependency): listed in the manifest, missing from the bundle" in error


def test_a_folder_the_script_did_not_install_is_never_replaced(bundle: Bundle, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    assert "is not an install of this script" in refused(bundle.dir, target, keep_target=True)
    assert (target / "notes.txt").read_text() == "keep me"


def test_part_sizes_read_like_the_option_says() -> None:
    assert gpu_bundle.parse_size("60MiB") == 60 * MIB
    assert gpu_bundle.parse_size("512K") == 512 * 1024
    assert gpu_bundle.parse_size("1048576") == MIB


def refused(bundle_dir: Path, target: Path, keep_target: bool = False) -> str:
    result = run_node_script(bundle_dir, target)
    assert result.returncode != 0, result.stdout
    assert keep_target or not target.exists()
    return result.stderr


def copy_bundle(bundle: Bundle, dest: Path) -> Path:
    shutil.copytree(bundle.dir, dest)
    return dest


def reassemble(bundle: Bundle, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "bundle.tar"
    with archive.open("wb") as out:
        for part in bundle.manifest["parts"]:
            out.write((bundle.dir / part["name"]).read_bytes())
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return dest


def path_view_without_cpython312_builds(target: Path, view: Path) -> Path:
    """A folder of links to everything in `target` except the distributions built for CPython 3.12 alone."""
    cpython312: set[str] = set()
    for dist_info in target.glob("*.dist-info"):
        tags = [
            line.split(":", 1)[1].strip()
            for line in (dist_info / "WHEEL").read_text().splitlines()
            if line.startswith("Tag:")
        ]
        if all(tag.startswith("cp312-") for tag in tags):
            rows = csv.reader((dist_info / "RECORD").read_text().splitlines())
            cpython312 |= {row[0].split("/")[0] for row in rows if row and not row[0].startswith(".")}
    assert {"pydantic_core", "msgspec", "zmq", "xgrammar"} <= cpython312
    view.mkdir()
    for entry in target.iterdir():
        if entry.name not in cpython312:
            (view / entry.name).symlink_to(entry)
    return view


def installed_files(target: Path) -> dict[str, int]:
    """Each installed file's size, without what only pip writes (its records, byte code, console scripts) and the
    env file (which names the target)."""
    pip_only = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json", "env.sh"}
    files = {}
    for path in target.rglob("*"):
        relative = path.relative_to(target)
        if path.is_dir() or "__pycache__" in relative.parts or relative.parts[0] == "bin" or path.name in pip_only:
            continue
        files[str(relative)] = path.stat().st_size
    return files
