"""The Python API on a finished run (docs/python-api.md): ``load_trained`` (its tuned model), ``predict`` (its top
classes of images) and ``export`` (its model for use without peftlab). The commands ``peftlab predict`` and ``export``
call these. Each function imports what it needs when called (no torch at ``import peftlab``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftlab.utils.errors import api, check_bool, check_path, check_paths

if TYPE_CHECKING:
    from pathlib import Path


@api()
def load_trained(run_dir: str | Path):
    """A finished run's tuned model, rebuilt from its config.yaml and adapter.safetensors on the CPU (what
    ``peftlab export`` loads): ``tuner.model`` is the trained model (a torch module taking images as the run's
    data made them), ``tuner.merged_model()`` the merged copy where the method merges."""
    from peftlab.training.export import load_trained as load_run
    from peftlab.utils.libraries import quieted

    check_path("run_dir", run_dir, what="a run folder (a path)")
    with quieted():  # a quantized base imports bitsandbytes, whose hub-kernel warning is no line for a notebook
        return load_run(run_dir)


@api()
def predict(run_dir: str | Path, images, top_k: int = 5) -> list[dict]:
    """Each image's ``top_k`` classes by a finished run, most probable first, as ``peftlab predict`` prints them:
    ``[{"image": path, "top_k": [{"class": name, "index": i, "probability": p}, ...]}, ...]``. ``images``: an
    image file or folder, or a list (or generator) of them. The images are made exactly as the run made its test
    images (its resize, interpolation and normalisation); the class names are the run's data's
    (``peftlab.training.evaluate.predict``)."""
    from collections.abc import Iterator

    from peftlab.training.evaluate import predict as predict_images
    from peftlab.utils.errors import UserError

    check_path("run_dir", run_dir, what="a run folder (a path)")
    if isinstance(images, Iterator):  # a generator: taken once, as the checks and the answers each walk the list
        images = list(images)
    check_paths("images", images, what="an image file or folder (a path), or a list of them")
    if not isinstance(top_k, int) or isinstance(top_k, bool):  # its value: the command's check, in its words
        raise UserError(f"top_k={top_k!r} is invalid: expected an integer >= 1")
    from peftlab.utils.libraries import quieted

    with quieted():
        return predict_images(run_dir, images, top_k)


@api()
def export(
    run_dir: str | Path,
    *,
    merged: str | Path | None = None,
    quantized: str | Path | bool | None = None,
    peft: str | Path | None = None,
    force: bool = False,
    replace: bool = False,
):
    """A finished run's model written for use without peftlab, as ``peftlab export RUN --merged OUT`` (``--quantized``,
    ``--peft DIR``) writes it (the command calls this); returns the path written. ``merged``: the merged model, a
    timm state dict in one .safetensors file (an HF model: a folder for ``from_pretrained``); ``quantized``: on a
    quantized base, the merged model kept quantized (a path, or True with ``merged``'s); ``peft``: a folder for
    ``peft.PeftModel.from_pretrained`` on the plain base. ``force``: export even a run whose merge check failed.
    ``replace``: write over an output that holds another run's export (every export records its run), which is
    refused otherwise, naming that run."""
    from pathlib import Path

    from peftlab.training.export import export_merged, export_peft
    from peftlab.utils.errors import UserError

    check_path("run_dir", run_dir, what="a run folder (a path)")
    check_path("merged", merged, optional=True)
    check_path("peft", peft, optional=True)
    check_bool("force", force)
    check_bool("replace", replace)
    if quantized is not None and quantized is not True:
        check_path("quantized", quantized, what="a path, or True with merged's path")
    if peft is not None:
        if merged is not None or quantized is not None:
            raise UserError("export(peft=DIR) writes the adapter alone: give it without merged and quantized")
        return export_peft(Path(run_dir), Path(peft), replace=replace)
    out = merged if quantized in (None, True) else quantized
    if out is None or (merged is not None and quantized not in (None, True)):
        raise UserError(
            "export needs exactly one output: merged=OUT.safetensors, quantized=OUT.safetensors or "
            "merged=OUT.safetensors with quantized=True"
        )
    return export_merged(Path(run_dir), Path(out), quantized=quantized is not None, force=force, replace=replace)
