"""``--format onnx``: ``model.onnx`` maps normalised pixels (N x 3 x S x S, any N) to class logits,
the whole classifier inside (class text, cache, adapters, ensemble), for ``onnxruntime``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from clipft.errors import CheckpointError, ConfigError

MODEL = "model.onnx"
CONFIG = "clipft_onnx.json"
INPUT, OUTPUT = "pixel_values", "logits"


class _Logits(nn.Module):
    """The module's forward as the exported graph (its cached class text becomes a constant)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.module(pixel_values).float()


def write(module: nn.Module, folder: Path, pixels: torch.Tensor, reference: torch.Tensor) -> tuple[list[str], float]:
    from clipft.exporting.common import check_logits, preprocessing_of
    from clipft.utils.io import atomic_write_json

    try:
        import onnxruntime  # noqa: F401 - checked before the slow export
        import onnxscript  # noqa: F401 - torch.onnx's exporter
    except ImportError as exc:
        raise ConfigError("--format onnx needs onnx, onnxscript and onnxruntime: pip install 'clipft[export]'") from exc
    graph = _Logits(module).eval()
    # one self-contained file unless protobuf's 2 GB limit forces the weights beside it (model.onnx.data)
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    try:
        with torch.no_grad():
            torch.onnx.export(
                graph, (pixels,), str(folder / MODEL), input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False, external_data=weight_bytes > 1_800_000_000,
            )
    except Exception as exc:  # noqa: BLE001 - torch.export / onnxscript raise many types for an untraceable forward
        raise CheckpointError(f"{type(module).__name__}.forward could not be exported to ONNX ({type(exc).__name__}: {str(exc)[:300]})") from exc
    pre = preprocessing_of(module)
    atomic_write_json(folder / CONFIG, {
        "format": "clipft-onnx-classifier", "input": INPUT, "output": OUTPUT,
        "class_names": list(module.class_names), "preprocessing": pre,
    })
    diff = check_logits(exported_logits(folder, torch.cat([pixels, pixels[:1]])), torch.cat([reference, reference[:1]]),
                        f"onnxruntime on {folder / MODEL}")
    return sorted(p.name for p in folder.iterdir()), diff  # model.onnx (+ model.onnx.data past 2 GB)


def exported_logits(folder: str | Path, pixels: torch.Tensor) -> torch.Tensor:
    """Class logits from ``onnxruntime`` (the batch size may differ from the export's probe)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(Path(folder) / MODEL), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT], {INPUT: pixels.numpy()})[0])
