"""Live while training (issue 27, section 2): what ``tinynet train --explore-every N`` writes
(from tiny real runs), what ``tinynet explore --watch RUN_DIR`` serves and refuses (talking only
to 127.0.0.1), its end on Ctrl-C, and, in a real headless Chromium, the loss curve gaining points
while a run trains."""

import base64
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from interrupt import sigint_as_usual
from test_cli import one_line_error, run

from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.explore import snapshots
from tinynet.explore.server import WatchServer
from tinynet.explore.snapshots import ACTIVATIONS, FOLDER, KEEP_ACTIVATIONS, LAYERS, STEPS
from tinynet.explore.watch import NotARunFolder, RunFolder
from tinynet.gradflow import GradientFlow
from tinynet.models.registry import model_entry
from tinynet.run_folder import LOCK
from tinynet.train import METRICS, TrainConfig, Trainer

from browser import chromium, console_errors
from datafiles import installed

REPO = Path(__file__).resolve().parents[1]
# A width-0.125 small GoogLeNet on 16-image batches of the digits: about 0.1 s a step.
TINY = ["--width", "0.125", "--batch-size", "16", "--schedule", "constant"]


def quiet(message):
    pass


@pytest.fixture(scope="module")
def data():
    pytest.importorskip("sklearn", reason="the runs train on the digits (scikit-learn)")
    train, test, classes = load_dataset("digits")
    return DataSplits(TensorDataset(*train[:96]), TensorDataset(*test[:32]), classes)


def tiny(out, **changes) -> TrainConfig:
    """Three 16-image steps an epoch, two epochs."""
    options = dict(width=0.125, batch_size=16, max_batches=3, epochs=2, schedule="constant",
                   out_dir=str(out))  # fmt: skip
    return TrainConfig(**{**options, **changes})


def read(out, name) -> dict:
    return json.loads((Path(out) / FOLDER / name).read_text())


@pytest.fixture(scope="module")
def explored(tmp_path_factory, data):
    """A run with --explore-every 1 and --log-gradients 1, and the same run with neither."""
    out, plain_out = tmp_path_factory.mktemp("explored"), tmp_path_factory.mktemp("plain")
    trainer = Trainer(tiny(out, explore_every=1, log_gradients=1), data, log=quiet)
    trainer.fit()
    plain = Trainer(tiny(plain_out), data, log=quiet)
    plain.fit()
    return trainer, out, plain, plain_out


# ------------------------------------------------------------------ what the trainer writes
def test_nothing_is_written_when_off_and_the_run_is_the_same_with_it(explored):
    trainer, out, plain, plain_out = explored
    assert not (plain_out / FOLDER).exists()
    assert sorted((out / FOLDER).iterdir()) == sorted(out / FOLDER / n for n in
                                                      (STEPS, LAYERS, ACTIVATIONS))  # fmt: skip
    # The snapshots' forward passes (eval mode, no gradients) change none of the run's numbers.
    same = ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5")
    assert [[r[k] for k in same] for r in trainer.history] == [
        [r[k] for k in same] for r in plain.history]  # fmt: skip
    for mine, theirs in zip(trainer.model.parameters(), plain.model.parameters()):
        np.testing.assert_array_equal(mine.data, theirs.data)


def test_each_step_is_a_point_whose_losses_average_to_the_epochs(explored):
    trainer, out, _, _ = explored
    steps = read(out, STEPS)
    assert steps["run"] == {"model": "small", "dataset": "digits", "epochs": 2,
                            "steps_per_epoch": 3, "every": 1}  # fmt: skip
    points = steps["points"]
    assert [(p["step"], p["epoch"]) for p in points] == [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2),
                                                         (5, 2)]  # fmt: skip
    for epoch, record in enumerate(trainer.history, 1):  # three 16-image batches an epoch
        mine = [p for p in points if p["epoch"] == epoch]
        assert np.mean([p["loss"] for p in mine]) == pytest.approx(record["train_loss"], rel=1e-12)
        assert np.mean([p["top1"] for p in mine]) == pytest.approx(record["train_top1"], rel=1e-12)
    assert all(p["lr"] == 0.1 for p in points)  # SGD's default, constant schedule


def test_the_layers_are_the_gradient_logs_measurements(explored):
    trainer, out, _, _ = explored
    layers = read(out, LAYERS)
    assert layers["names"] == GradientFlow(trainer.model).names
    assert len(layers["records"]) == 6 == len(trainer.gradient_log)
    for mine, logged in zip(layers["records"], trainer.gradient_log):
        assert (mine["step"], mine["epoch"]) == (logged["step"], logged["epoch"])
        assert mine["grad_norm"] == list(logged["grad_norm"].values())
        assert mine["update_ratio"] == list(logged["update_ratio"].values())


def test_the_activations_are_the_latest_snapshots_of_the_first_test_image(explored, data):
    trainer, out, _, _ = explored
    found = read(out, ACTIVATIONS)
    assert found["input"]["shape"] == [1, 1, 32, 32]
    assert found["input"]["max"] == pytest.approx(float(data.test.arrays[0][0].max()))
    assert [s["step"] for s in found["snapshots"]] == [2, 3, 4, 5][-KEEP_ACTIVATIONS:]
    modules = [m["name"] for m in found["snapshots"][-1]["modules"]]
    blocks = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    assert modules == ["conv1", "conv2", "conv3", *(f"inception{b}" for b in blocks)]
    for module in found["snapshots"][-1]["modules"]:
        maps = module["maps"]
        assert len(maps["channels"]) == min(snapshots.CHANNELS, module["shape"][1])
        pixels = base64.b64decode(maps["pixels"])
        assert len(pixels) == len(maps["channels"]) * maps["height"] * maps["width"]
        assert max(maps["height"], maps["width"]) <= snapshots.MAP_SIZE
        assert math.isfinite(module["mean"]) and module["nonfinite"] == 0
    assert len((out / FOLDER / ACTIVATIONS).read_bytes()) < 400_000


@pytest.mark.parametrize(
    "name", ["small", "inception_v3_small", "inception_v4_small", "inception_resnet_v2_small"]
)
def test_every_network_s_blocks_are_snapshotted(name, tmp_path):
    entry = model_entry(name)
    model = entry.build(in_channels=1, num_classes=10)
    image = np.random.default_rng(0).random((1, entry.input_size, entry.input_size), np.float32)
    writer = snapshots.SnapshotWriter(model, image, lambda batch: batch, tmp_path, 1, {})
    modules = writer._activations(step=0, epoch=1)["modules"]
    names = dict(model.named_modules())
    assert len(modules) >= 6 and all(m["name"] in names for m in modules)  # not one container
    assert all(len(m["shape"]) == 4 and "maps" in m for m in modules)


def test_a_resumed_run_keeps_the_points_of_its_first_part(tmp_path, data):
    Trainer(tiny(tmp_path, epochs=1, explore_every=2), data, log=quiet).fit()
    assert [p["step"] for p in read(tmp_path, STEPS)["points"]] == [0, 2]
    Trainer.resume(tmp_path, epochs=2, data=data, log=quiet).fit()
    assert [p["step"] for p in read(tmp_path, STEPS)["points"]] == [0, 2, 4]
    assert [r["step"] for r in read(tmp_path, LAYERS)["records"]] == [0, 2, 4]


def test_long_runs_stay_bounded():
    items = list(range(2 * snapshots.MAX_POINTS + 7))
    while len(items) > snapshots.MAX_POINTS:
        items = snapshots._thinned(items, snapshots.MAX_POINTS)
    assert items[0] == 0 and items[-1] == 2 * snapshots.MAX_POINTS + 6
    assert snapshots._thinned([0, 1, 2, 3], 3) == [0, 2, 3]
    assert snapshots._thinned([0, 1, 2, 3, 4], 3) == [0, 2, 4]


def test_a_bad_explore_every_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--explore-every", "0", "--out", tmp_path / "r")
    assert code == 1
    assert "explore_every must be a positive int (steps) or None; got 0" in one_line_error(
        err, "train")  # fmt: skip


# ------------------------------------------------------------------ the server
@pytest.fixture
def serving():
    """Serve a folder on 127.0.0.1 in a thread: serving(path) -> the server (shut down after)."""
    servers = []

    def start(path):
        server = WatchServer(RunFolder(path), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(server, path, headers=None, method="GET"):
    """(status, headers, body) of a request sent as written (no normalising of ``path``)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        host = {"Host": f"127.0.0.1:{server.server_address[1]}"}
        for key, value in {**host, **(headers or {})}.items():
            connection.putheader(key, value)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_the_page_and_the_endpoints(explored, serving):
    trainer, out, _, _ = explored
    server = serving(out)
    assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    status, headers, page = get(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"window.TINYNET_DATA" in page and b'<section id="live">' in page
    assert b"tinynetExplorer" in page and b"live-loss" in page  # explorer.js, then live.js
    status, _, body = get(server, "/api/metrics")
    metrics = json.loads(body)
    assert status == 200 and metrics["state"] == "finished" and metrics["name"] == out.name
    assert [e["test_loss"] for e in metrics["epochs"]] == [r["test_loss"] for r in
                                                           trainer.history]  # fmt: skip
    assert metrics["points"] == read(out, STEPS)["points"]
    assert json.loads(get(server, "/api/layers")[2])["names"] == read(out, LAYERS)["names"]
    assert json.loads(get(server, "/api/activations")[2]) == {
        k: read(out, ACTIVATIONS)[k] for k in ("input", "snapshots")}  # fmt: skip
    # A poll that finds nothing new: 304 and no body; HEAD: the headers alone.
    status, headers, _ = get(server, "/api/metrics")
    assert get(server, "/api/metrics", {"If-None-Match": headers["ETag"]})[:3:2] == (304, b"")
    status, headers, body = get(server, "/api/layers", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert get(server, "/api/metrics", method="POST")[0] == 501
    assert get(server, "/favicon.ico")[0] == 204


@pytest.mark.parametrize(
    "path",
    ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd", "//etc/passwd",
     "/etc/passwd", "/api/../../etc/passwd", "/api/metrics/../../../etc/passwd",
     "http://127.0.0.1/etc/passwd", "/metrics.jsonl", "/checkpoint.npz", "/explore/steps.json",
     "/api/metrics%00", "/api", "/api/", "/api/checkpoint", "/live.js"],
)  # fmt: skip
def test_no_path_reaches_a_file(explored, serving, path):
    _, out, _, _ = explored
    status, _, body = get(serving(out), path)
    assert status == 404 and json.loads(body) == {"error": "not found"}


def test_requests_for_another_host_name_are_refused(explored, serving):
    _, out, _, _ = explored
    server = serving(out)
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", ""):
        assert get(server, "/api/metrics", {"Host": host})[0] == 403, host
    assert get(server, "/", {"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_links_out_of_the_folder_are_not_followed(tmp_path, serving):
    outside, run_dir = tmp_path / "outside", tmp_path / "run"
    (outside / FOLDER).mkdir(parents=True)
    run_dir.mkdir()
    secret = {"epoch": 1, "train_loss": 123.0, "test_loss": 456.0}
    (outside / "secret.jsonl").write_text(json.dumps(secret) + "\n")
    steps = {"format": snapshots.FORMAT, "run": {"epochs": 9}, "points": [{"step": 77}]}
    (outside / FOLDER / STEPS).write_text(json.dumps(steps))
    (run_dir / METRICS).symlink_to(outside / "secret.jsonl")
    (run_dir / FOLDER).symlink_to(outside / FOLDER)
    server = serving(run_dir)
    metrics = json.loads(get(server, "/api/metrics")[2])
    assert metrics["epochs"] == [] and metrics["points"] == [] and metrics["run"] == {}
    assert metrics["state"] == "waiting"
    (run_dir / FOLDER).unlink()  # a folder of its own, with a link to a file outside in it
    (run_dir / FOLDER).mkdir()
    (run_dir / FOLDER / STEPS).symlink_to(outside / FOLDER / STEPS)
    assert json.loads(get(server, "/api/metrics")[2])["points"] == []
    # The same files, copied in, are read: the refusal above was the links'.
    (run_dir / METRICS).unlink()
    shutil.copy(outside / "secret.jsonl", run_dir / METRICS)
    assert json.loads(get(server, "/api/metrics")[2])["epochs"] == [secret]


def test_the_state_of_the_run(tmp_path, serving):
    server = serving(tmp_path)  # an empty folder: a run about to start there
    state = lambda: json.loads(get(server, "/api/metrics")[2])["state"]  # noqa: E731
    assert state() == "waiting"
    (tmp_path / LOCK).write_text(f"{os.getpid()}\n")  # a running process holds the lock
    assert state() == "training"
    (tmp_path / LOCK).unlink()
    (tmp_path / METRICS).write_text(json.dumps({"epoch": 1, "test_loss": 1.0}) + "\nnot json\n")
    assert state() == "ended"  # no explore files: how many epochs it was to have is unknown
    steps = {"format": snapshots.FORMAT, "run": {"epochs": 2}, "points": []}
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / STEPS).write_text(json.dumps(steps))
    assert state() == "stopped"
    (tmp_path / METRICS).write_text(json.dumps({"epoch": 2, "test_loss": 1.0}) + "\n")
    assert state() == "finished"


def test_what_is_not_a_run_folder_is_named(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    for path, expected in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "notes.txt", "is a file, not a run folder"),
        (tmp_path / "other", "is not a tinynet run folder"),
    ]:
        with pytest.raises(NotARunFolder, match=expected):
            RunFolder(path)
        code, out, err = run(capsys, "explore", "--watch", path)
        assert code == 1 and out == ""
        assert f"{path} {expected}" in one_line_error(err, "explore")
    code, _, err = run(capsys, "explore", "--watch", tmp_path, "--out", tmp_path / "p.html")
    assert code == 1 and "drop --out" in one_line_error(err, "explore")
    code, _, err = run(capsys, "explore", "--model", "small", "--port", "8000", "--out", "x.html")
    assert code == 1 and "--port and --host go with --watch" in one_line_error(err, "explore")


def test_a_port_in_use_is_one_line(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "explore", "--watch", tmp_path, "--port", port)
    assert code == 1 and out == ""
    assert f"cannot serve on 127.0.0.1:{port}: " in one_line_error(err, "explore")
    assert "choose another --port, or 0 for a free one" in err


# ------------------------------------------------------------------ the command, and Ctrl-C
def start_watch(run_dir, *options):
    """``tinynet explore --watch RUN_DIR --port 0`` in a subprocess; (process, its URL)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tinynet", "explore", "--watch", str(run_dir), "--port", "0",
         *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        preexec_fn=sigint_as_usual,
    )  # fmt: skip
    line = process.stdout.readline()  # the first line: where it serves
    if not line.startswith("watching "):
        process.kill()
        raise AssertionError(f"no URL printed: {line!r} {process.communicate()}")
    return process, line.split(" at ")[1].split()[0]


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def test_ctrl_c_ends_the_server_cleanly(tmp_path):
    process, url = start_watch(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        connection = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=30)
        connection.request("GET", "/api/metrics")
        assert json.loads(connection.getresponse().read())["state"] == "waiting"
        connection.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert err == "\ninterrupted\n" and "Traceback" not in err
    with pytest.raises(ConnectionRefusedError):  # the socket is closed
        socket.create_connection(("127.0.0.1", port_of(url)), timeout=10).close()


# ------------------------------------------------------------------ in a real browser
def wait_for(condition, what: str, seconds: float):
    """Poll ``condition`` until it returns something true (returned), for at most ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {seconds} s")


@pytest.mark.skipif(not installed("sklearn"), reason="the run trains on the digits (scikit-learn)")
def test_the_curve_gains_points_as_a_tiny_run_trains(tmp_path):
    browser = chromium()
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # the page is opened before the run starts
    watch, url = start_watch(run_dir)
    train = None
    try:
        browser.get(url)
        status = lambda: browser.find_element("id", "live-status")  # noqa: E731
        wait_for(lambda: status().get_attribute("data-state") == "waiting", "waiting", 60)
        assert "waiting" in status().text
        points = lambda: int(browser.find_element("id", "live-loss").get_attribute(  # noqa: E731
            "data-points"))  # fmt: skip
        assert points() == 0
        train = subprocess.Popen(
            [sys.executable, "-m", "tinynet", "train", *TINY, "--max-batches", "4", "--epochs",
             "50", "--explore-every", "1", "--out", str(run_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
            preexec_fn=sigint_as_usual,
        )  # fmt: skip
        first = wait_for(points, "the first points", 300)
        wait_for(lambda: points() > first, f"more than {first} points", 300)
        assert status().get_attribute("data-state") == "training"
        assert "step" in status().text
        layers = browser.find_element("id", "live-grad-norm").get_attribute("data-points")
        assert int(layers) > 50  # one point a weight layer of the small GoogLeNet
        assert browser.find_elements("css selector", "#live-activations canvas.map")
        train.send_signal(signal.SIGINT)  # the run stops long before its 50 epochs
        assert train.wait(timeout=120) == 130
        wait_for(lambda: status().get_attribute("data-state") == "stopped", "stopped", 60)
        assert status().text.startswith("stopped before its last epoch")
        assert points() >= first + 1  # what the run wrote stays on the page
        assert console_errors(browser) == []
    finally:
        browser.quit()
        for process in (train, watch):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
