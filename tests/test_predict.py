"""``peftlab predict RUN IMAGES...`` and ``peftlab.predict``: each image's top-k class names with probabilities,
the images made exactly as the run made its test images (``data.build.eval_images``, ``build_data``'s eval
transform), so that predict's top-1 on the run's own test files scores what the run's evaluation reported; a
missing or unfinished run, a text run, a file that is no image: one line, exit 2."""

import contextlib
import io
import json
import shutil

import pytest
import torch
from testkit import TINY_MODEL, assert_one_line_refusal, command_in_process, hf_text_dir, write_text_task

import peftlab
from peftlab import cli
from peftlab.config.schema import load_config
from peftlab.data.build import eval_images
from peftlab.data.inputs import build_splits
from peftlab.data.synthetic import write_jpeg_folder
from peftlab.models.backbones import model_inputs

CLASSES = 3

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A finished LoRA run of the tiny ViT on an image folder (3 classes, 15 test images) whose test top-1 is
    neither 0 nor 1, so that matching it is a claim about every image."""
    root = tmp_path_factory.mktemp("predict")
    write_jpeg_folder(root / "images", n_train=48, size=40, classes=CLASSES, n_test=15, class_colour=0.1)
    overrides = {
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": str(root / "images"), "interpolation": "bicubic"},
        "train": {"max_steps": 3, "batch_size": 16, "lr": 1e-2},
    }
    result = peftlab.train(load_config(overrides=overrides), run_dir=root / "run")
    assert result["status"] == "completed", result["error"]
    return root / "run", result


def test_predict_top1_on_the_runs_test_images_is_the_runs_evaluation(image_run):
    run_dir, result = image_run
    cfg = load_config(run_dir / "config.yaml")
    spec = model_inputs(cfg.model)
    test = build_splits(cfg.data, spec).test  # the run's own test split, as its recipe built it
    paths, labels = [str(p) for p in test.paths], torch.as_tensor(test.labels)
    # the tensors predict feeds are the recipe's test tensors, bit for bit
    tensors = eval_images(cfg.data, paths, spec.img_size, spec.in_chans, spec.mean, spec.std)
    assert torch.equal(tensors, test.get_batch(range(len(paths)))[0])

    predictions = peftlab.predict(run_dir, paths, top_k=CLASSES)
    top1 = torch.tensor([row["top_k"][0]["index"] for row in predictions])
    accuracy = int((top1 == labels).sum()) / len(labels)
    assert 0 < accuracy < 1 and accuracy == result["metrics"]["test_top1"]
    with torch.no_grad():  # and each image's answer is the loaded model's on those tensors
        logits = peftlab.load_trained(run_dir).model.eval()(tensors)
    assert torch.equal(top1, logits.argmax(-1))
    names = result["provenance"]["data"]["class_names"]
    assert names == [f"class{i}" for i in range(CLASSES)]
    for row, probabilities in zip(predictions, logits.softmax(-1), strict=True):
        ranked = row["top_k"]
        assert [c["class"] for c in ranked] == [names[c["index"]] for c in ranked]
        assert [c["probability"] for c in ranked] == sorted((c["probability"] for c in ranked), reverse=True)
        assert sum(c["probability"] for c in ranked) == pytest.approx(1.0, abs=1e-5)  # all 3 classes
        assert ranked[0]["probability"] == pytest.approx(float(probabilities.max()), abs=1e-6)


def predict_command(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.run_command(["predict", *argv])
    return status, stdout.getvalue(), stderr.getvalue()


def test_the_command_prints_each_images_top_k_and_its_json_is_the_apis(image_run):
    run_dir, _ = image_run
    folder = run_dir.parent / "images" / "test"  # a folder: its class folders' images, by path
    status, out, err = predict_command(str(run_dir), str(folder), "--top-k", "2")
    assert status == 0, err
    lines = out.splitlines()
    expected = peftlab.predict(run_dir, folder, top_k=2)
    assert len(lines) == len(expected) == 15
    first = expected[0]
    assert lines[0] == (
        f"{first['image']}: {first['top_k'][0]['class']} {100 * first['top_k'][0]['probability']:.1f}%  "
        f"{first['top_k'][1]['class']} {100 * first['top_k'][1]['probability']:.1f}%"
    )
    status, out, err = predict_command(str(run_dir), expected[0]["image"], "--json", "--top-k", "9")
    assert status == 0, err
    shown = json.loads(out)
    assert len(shown) == 1 and len(shown[0]["top_k"]) == CLASSES  # --top-k above the classes: all of them
    assert [c["class"] for c in shown[0]["top_k"][:2]] == [c["class"] for c in expected[0]["top_k"]]
    assert [c["probability"] for c in shown[0]["top_k"][:2]] == pytest.approx(
        [c["probability"] for c in expected[0]["top_k"]], abs=1e-6
    )


def test_the_command_prints_what_the_api_streams(image_run, monkeypatch):
    """One implementation: ``peftlab predict`` prints the batches of ``training.evaluate.predictions``, the
    generator ``peftlab.predict`` collects, each batch as it comes."""
    from peftlab.training import evaluate

    calls = []
    answer = {"image": "x.png", "top_k": [{"class": "cat", "index": 0, "probability": 0.5}]}

    def streamed(*args, **kwargs):
        calls.append(args)
        return 1, iter([[answer]])

    monkeypatch.setattr(evaluate, "predictions", streamed)
    status, out, _ = predict_command(str(image_run[0]), "x.png", "--top-k", "3")
    assert (status, out, calls) == (0, "x.png: cat 50.0%\n", [(str(image_run[0]), ["x.png"], 3)])


def test_a_long_folder_streams_its_answers_in_the_order_of_their_paths(image_run, tmp_path, monkeypatch):
    """A folder is walked as its answers are printed, not listed and held first: the first batch is printed before
    the second batch's files are read (one removed by then stops the command after it, in one line), and the
    order is the paths' (each folder's names sorted, subfolders where they sort), as ``sorted`` orders them."""
    from peftlab.training.evaluate import PREDICT_BATCH, predictions

    run_dir, _ = image_run
    sources = sorted((run_dir.parent / "images" / "test").rglob("*.jpg"))
    folder = tmp_path / "many"
    for i in range(PREDICT_BATCH + 6):  # two batches, in three folders, one of them inside another
        target = folder / ("b" if i % 3 == 0 else "a/sub" if i % 3 == 1 else "a") / f"{i:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i % len(sources)], target)
    count, batches = predictions(run_dir, folder, top_k=1)
    first = next(batches)
    expected = sorted(folder.rglob("*.jpg"))
    assert count == len(expected) and [row["image"] for row in first] == [str(p) for p in expected[:PREDICT_BATCH]]
    assert [row["image"] for row in next(batches)] == [str(p) for p in expected[PREDICT_BATCH:]]

    from peftlab.data import build

    def first_batch_then_a_file_gone(*args):  # the first batch made, a file of the second removed meanwhile
        expected[-1].unlink(missing_ok=True)
        return eval_images(*args)

    monkeypatch.setattr(build, "eval_images", first_batch_then_a_file_gone)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.run_command(["predict", str(run_dir), str(folder)])
    assert status == 2 and stderr.getvalue().count("\n") == 1 and expected[-1].name in stderr.getvalue()
    assert len(stdout.getvalue().splitlines()) == PREDICT_BATCH  # the first batch, printed before the failure


def test_the_json_of_a_folder_is_the_apis_list(image_run):
    run_dir, _ = image_run
    folder = run_dir.parent / "images" / "test"
    status, out, err = predict_command(str(run_dir), str(folder), "--json", "--top-k", "2")
    assert status == 0, err
    assert out == json.dumps(peftlab.predict(run_dir, folder, top_k=2), indent=2) + "\n"
    # images given as a generator: walked twice (checked, then classified), so taken as a list first
    assert peftlab.predict(run_dir, (p for p in [folder]), top_k=2) == json.loads(out)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    overrides = {
        "model": {"source": "hf-text", "path": str(hf_text_dir(root / "roberta", "roberta"))},
        "method": {"name": "lora", "r": 2},
        "data": {"name": "text", "root": str(write_text_task(root / "task")), "max_length": 16},
        "train": {"max_steps": 2, "batch_size": 8},
    }
    result = peftlab.train(load_config(overrides=overrides), run_dir=root / "run")
    assert result["status"] == "completed", result["error"]
    return root / "run"


def test_bad_input_is_one_line(image_run, text_run, tmp_path):
    run_dir, _ = image_run
    image = str(next((run_dir.parent / "images" / "test").rglob("*.jpg")))
    unfinished = tmp_path / "unfinished"  # a run stopped before its end: config, no result.json
    unfinished.mkdir()
    shutil.copy(run_dir / "config.yaml", unfinished / "config.yaml")
    failed = tmp_path / "failed"
    shutil.copytree(run_dir, failed)
    record = json.loads((failed / "result.json").read_text())
    (failed / "result.json").write_text(json.dumps({**record, "status": "failed", "error": "killed"}))
    (tmp_path / "notes.jpg").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    cases = {
        "missing run": ([str(tmp_path / "nowhere"), image], "holds no completed run"),
        "unfinished run": ([str(unfinished), image], "holds no completed run"),
        "failed run": ([str(failed), image], "holds no completed run"),
        "text run": ([str(text_run), image], "is a text model (model.source: hf-text"),
        "not an image": ([str(run_dir), str(tmp_path / "notes.jpg")], "is not an image PIL can read", "notes.jpg"),
        "missing image": ([str(run_dir), str(tmp_path / "nope.png")], "nope.png: no such image file or folder"),
        "folder without images": ([str(run_dir), str(tmp_path / "empty")], "the folder holds no image file"),
        "top-k 0": ([str(run_dir), image, "--top-k", "0"], "--top-k 0 is invalid"),
    }
    for name, (argv, *needles) in cases.items():
        status, stderr = command_in_process("predict", *argv)
        try:
            assert_one_line_refusal(status, stderr, *needles)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


def test_every_path_is_checked_before_the_model_loads_and_named_as_what_it_is(image_run, tmp_path, monkeypatch):
    """A FIFO, a device (a link to /dev/zero, /dev/null itself) and a file that is no image, given or inside a
    folder, are one line naming what they are, before the model is loaded (issue 78: found after 20 s of loading
    and called 'no such image file or folder'); a FIFO is never opened, so nothing blocks."""
    import os

    from peftlab.training import export

    run_dir, _ = image_run
    image = next((run_dir.parent / "images" / "test").rglob("*.jpg"))
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    shutil.copyfile(image, folder / "a.jpg")
    os.mkfifo(folder / "sub" / "b.jpg")
    notes = tmp_path / "notes" / "z.jpg"
    notes.parent.mkdir()
    shutil.copyfile(image, notes.parent / "a.jpg")
    notes.write_text("not an image\n")
    loaded = []
    monkeypatch.setattr(export, "load_trained", lambda *args, **kwargs: loaded.append(args))
    cases = {
        "a FIFO": (tmp_path / "pipe.png", "pipe.png is a FIFO (named pipe)"),
        "a link to /dev/zero": (tmp_path / "zero.png", "zero.png is a character device"),
        "a device": ("/dev/null", "/dev/null is a character device"),
        "a FIFO in a folder": (folder, "b.jpg is a FIFO (named pipe)"),
        "no image, last in a folder": (notes.parent, "z.jpg is not an image PIL can read"),
    }
    for name, (path, needle) in cases.items():
        status, stderr = command_in_process("predict", str(run_dir), str(image), str(path))
        try:
            assert_one_line_refusal(status, stderr, needle)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None
    assert loaded == []
