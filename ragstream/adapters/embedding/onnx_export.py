"""ONNX graphs exported from the loaded model's own weights (no hub, no network), cached per weights hash
under ~/.cache/ragstream/models/onnx/<weights sha256>/ (never in the checkout), written atomically so that
workers starting together on one host never read a half-written file."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# Bump when the exported graph changes (wrapper, opset, quantization settings): old files are not reused.
EXPORT_VERSION = 1
OPSET = 17


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragstream" / "models" / "onnx"


def onnx_path(weights_sha256: str, int8: bool) -> Path:
    kind = "int8" if int8 else "fp32"
    return cache_root() / weights_sha256 / f"model.{kind}.v{EXPORT_VERSION}.onnx"


def check_exportable(model: SentenceTransformer) -> None:
    """Only Transformer -> mean Pooling [-> Normalize] is exported: that is the graph the wrapper rebuilds;
    any other pipeline would silently compute something else."""
    kinds = [type(m).__name__ for m in model]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise RuntimeError(f"ONNX export supports Transformer+Pooling(+Normalize), not {kinds}")
    pooling = model[1].get_config_dict()
    if pooling.get("pooling_mode") != "mean" or not pooling.get("include_prompt", True):
        raise RuntimeError(f"ONNX export supports mean pooling only, not {pooling}")


def _pooled(model: SentenceTransformer, names: list[str]) -> torch.nn.Module:
    import torch

    class MeanPooled(torch.nn.Module):
        """The transformer, then sentence-transformers' mean pooling and Normalize, as one graph."""

        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(names, inputs, strict=True))
            hidden = self.transformer(**kwargs).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    return MeanPooled(model[0].auto_model).eval()


def _input_names(model: SentenceTransformer) -> list[str]:
    features = model.preprocess(["probe"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]


def _export_fp32(model: SentenceTransformer, target: Path) -> None:
    import torch

    names = _input_names(model)
    features = model.preprocess(["a short text", "a somewhat longer text to export with"])
    args = tuple(features[k].cpu() for k in names)
    axes = {k: {0: "batch", 1: "sequence"} for k in names} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter (dynamo=False) needs no onnxscript and handles this BERT graph; its
        # deprecation and tracer warnings are about shapes we keep dynamic (checked by the probe's cosine).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _pooled(model, names),
            args,
            str(target),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


class _DropPreprocessHint(logging.Filter):
    """onnxruntime's quantizer logs a 'consider pre-processing' warning on the root logger every time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        # Per-channel int8 weights: clearly closer to fp32 than per-tensor (cosine ~0.994 vs ~0.97 here).
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.getLogger().removeFilter(hint)


def _atomic(target: Path, write: Callable[[Path], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared by the host's workers
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def onnx_model(model: SentenceTransformer, weights_sha256: str, int8: bool = False) -> Path:
    """The cached graph for these weights, exported (and quantized for int8) on first use."""
    target = onnx_path(weights_sha256, int8)
    if target.exists():
        return target
    check_exportable(model)
    if not int8:
        log.info("exporting the embedding model to ONNX: %s", target)
        return _atomic(target, lambda tmp: _export_fp32(model, tmp))
    fp32 = onnx_model(model, weights_sha256, int8=False)
    log.info("quantizing the ONNX embedding model to int8: %s", target)
    return _atomic(target, lambda tmp: _quantize_int8(fp32, tmp))
