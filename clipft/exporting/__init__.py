"""Export a trained checkpoint to the formats people deploy (``clipft-export CKPT OUT --format F``).

======================  ============================================================================
``hf``                  ``CLIPModel.from_pretrained(OUT)`` + tokenizer + image processor, and the class
                        head as ``classifier.safetensors`` (HF CLIP backbones)
``open_clip``           ``open_clip.create_model("local-dir:OUT")`` (config + safetensors weights), and
                        the class head (open_clip backbones)
``safetensors``         the whole module's weights + a JSON record (:func:`load_safetensors_export`
                        rebuilds it, with the checkpoint rules: no code runs); any method
``onnx``                ``model.onnx``: pixels -> class logits, the class head inside; any method
                        whose forward traces
======================  ============================================================================

PEFT adapters are merged first (the module's ``inference_export``). Every export is checked before
it is kept: the folder is loaded back with the target's own loader and its logits compared with
the checkpoint's on probe images; ``clipft_export.json`` records the largest difference.
"""

from __future__ import annotations

from clipft import registry
from clipft.exporting.common import ExportResult
from clipft.exporting.exporter import WRITERS, export_module
from clipft.exporting.safetensors_format import load_safetensors_export

FORMATS = tuple(WRITERS)
for _name, _writer in WRITERS.items():
    registry.register("exporter", _writer, name=_name)  # clipft.registry kind "exporter"

__all__ = ["FORMATS", "ExportResult", "export_checkpoint", "export_module", "load_safetensors_export"]


def export_checkpoint(ckpt: str, fmt: str, out: str, trust_checkpoint: bool = False, overwrite: bool = False) -> ExportResult:
    """Load ``ckpt`` (safely, as every clipft loader does) and export it as ``fmt`` into the folder ``out``."""
    from clipft.methods.loading import load_module

    module = load_module(ckpt, trust_checkpoint=trust_checkpoint)
    return export_module(module, fmt, out, overwrite=overwrite, source=str(ckpt))
