"""Layer health: the numbers measured in the step, the findings judged from them, and what
every reader sees of them (the event files, ``tbviz report``, the onset warnings).

The exact tests pin the in-step numbers on tiny arrays (every backend) and the judge's
rules on hand-made numbers (plain Python, run once). The training tests inject one fault
per finding kind into the article's CNN at the end of epoch index 1, on every backend,
and read the findings back: right kind, right layer, right onset.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import keras
import numpy as np
import pytest
from _cli_support import run_tbviz
from _health_models import FAULTS, HEALTHY, article, mnist
from conftest import decode_png, read_activations
from keras.ops import convert_to_numpy as to_np

from tbviz import ActivationLogger, LayerHealthWarning
from tbviz.io import tags
from tbviz.numerics.health import (
    BOUNDS,
    EXPLODING_RATIO,
    MIN_VALUES_PER_CHANNEL,
    OBSERVED,
    VANISHING_RATIO,
    Health,
    HealthMonitor,
    LayerFacts,
    bound_shares,
    constant_channels,
    onset_message,
)
from tbviz.numerics.layout import Layout

# -- the numbers measured in the step (keras.ops, every backend) ----------------------------


def test_constant_channels_are_counted_over_every_sample_and_position():
    """A channel counts only if it holds one value everywhere; a NaN in it makes it not constant."""
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 5)).astype(np.float32)
    x[..., 0] = 0.0  # a dead ReLU channel
    x[..., 1] = 5.0  # constant, not 0
    x[..., 3] = 0.0
    x[1, 2, 2, 3] = 1e-6  # one position differs: alive
    x[..., 4] = 2.0
    x[0, 0, 0, 4] = np.nan
    assert to_np(constant_channels(x, Layout("maps", (3, 3, 5)))) == 2


def test_constant_channels_of_channels_first_and_sequences():
    """The channel axis follows the layout: channels first, or a sequence's last axis."""
    x = np.random.default_rng(1).normal(size=(2, 4, 3, 3)).astype(np.float32)
    x[:, 1] = 0.0
    assert to_np(constant_channels(x, Layout("maps", (4, 3, 3), channels_first=True))) == 1
    tokens = np.random.default_rng(2).normal(size=(3, 7, 6)).astype(np.float32)
    tokens[..., [0, 5]] = -1.0
    assert to_np(constant_channels(tokens, Layout("strip", (7, 6)))) == 2


def test_bound_shares_of_a_bounded_activation():
    """Values within the margin of a bound count as at it; NaN as at neither."""
    values = np.array([0.0, 0.005, 0.02, 0.5, 0.995, 1.0, np.nan, 0.7], np.float32)
    at_low, at_high = (float(to_np(v)) for v in bound_shares(values, BOUNDS["sigmoid"]))
    assert at_low == pytest.approx(2 / 8) and at_high == pytest.approx(2 / 8)
    at_low, at_high = (float(to_np(v)) for v in bound_shares(values, BOUNDS["hard_sigmoid"]))
    assert at_low == pytest.approx(1 / 8) and at_high == pytest.approx(1 / 8)  # exact bounds only


def test_bound_shares_of_the_observed_range_and_without_bounds():
    """Unknown bounds: the share exactly at the maximum (0 for a constant layer); None: NaN."""
    at_low, at_high = bound_shares(np.array([1, 2, 3, 3, 3], np.float32), OBSERVED)
    assert math.isnan(float(to_np(at_low))) and float(to_np(at_high)) == pytest.approx(3 / 5)
    assert float(to_np(bound_shares(np.full(6, 4.0, np.float32), OBSERVED)[1])) == 0.0
    assert all(math.isnan(float(to_np(v))) for v in bound_shares(np.ones(3, np.float32), None))


# -- the judge (plain Python) -----------------------------------------------------------------


def conv(path, channels=8, values=4 * 10 * 10, activation="relu", **facts):
    facts.setdefault("has_weights", True)
    return LayerFacts(path, activation, channels, values, **facts)


def healthy(rms=1.0, constant=0, at_low=math.nan, at_high=math.nan):
    return Health(constant, at_low, at_high, rms, 0)


@pytest.mark.backend_independent
def test_a_finding_keeps_its_onset_while_it_holds_and_ends_when_it_stops():
    """Dead from step 2 to 3 is one finding since step 2; back again at 5 is a new one."""
    monitor = HealthMonitor([conv("a"), conv("b")], samples=4)
    dead = healthy(constant=6)
    seen = [monitor.observe(step, [healthy(), h]) for step, h in
            enumerate([healthy(), healthy(), dead, dead, healthy(), dead])]  # fmt: skip
    assert [[f.since for f in active[1]] for active, _ in seen] == [[], [], [2], [2], [], [5]]
    assert [[(f.layer, f.kind) for f in onsets] for _, onsets in seen] == [
        [], [], [("b", "dead")], [], [], [("b", "dead")]
    ]
    finding = seen[2][0][1][0]
    assert (finding.severity, finding.value) == ("warning", 6 / 8)
    assert finding.sentence() == (
        "'b' is dead since epoch 3: 6 of 8 channels output 0 on every position of the probe "
        "batch (4 samples)"
    )


@pytest.mark.backend_independent
def test_dead_is_claimed_only_with_enough_values_per_channel():
    """A Dense layer's units on 4 probe samples (4 values each) are never called dead."""
    few = conv("dense", channels=10, values=MIN_VALUES_PER_CHANNEL - 1)
    monitor = HealthMonitor([few], samples=4)
    active, _ = monitor.observe(0, [healthy(constant=10)])
    assert active == [[]]


@pytest.mark.backend_independent
def test_exploding_and_vanishing_against_the_first_logged_epoch():
    """The RMS is compared with the layer's first logged one, at the documented ratios."""
    monitor = HealthMonitor([conv("up"), conv("down"), conv("steady")], samples=4)
    monitor.observe(0, [healthy(2.0), healthy(2.0), healthy(2.0)])
    active, onsets = monitor.observe(
        1, [healthy(2.0 * EXPLODING_RATIO), healthy(2.0 * VANISHING_RATIO), healthy(2.0 * 50)]
    )
    assert [[f.kind for f in a] for a in active] == [["exploding"], ["vanishing"], []]
    assert active[0][0].value == pytest.approx(EXPLODING_RATIO)
    assert "its RMS is 200, 100 times its first logged epoch's (2)" in active[0][0].detail
    assert [f.severity for f in onsets] == ["warning", "info"]  # 'down' follows 'up'
    assert onsets[1].origin == "up"


@pytest.mark.backend_independent
def test_nan_names_its_first_layer_in_model_order_once():
    """NaN/Inf in three layers: the first is the warning, the rest follow it, one message."""
    layers = [conv("a"), conv("b"), conv("c"), conv("d")]
    monitor = HealthMonitor(layers, samples=4)
    monitor.observe(0, [healthy()] * 4)
    nan = Health(0, math.nan, math.nan, math.nan, 12)
    active, onsets = monitor.observe(1, [healthy(), nan, nan, nan])
    assert [(f.layer, f.severity, f.origin) for f in onsets] == [
        ("b", "warning", None), ("c", "info", "b"), ("d", "info", "b")
    ]
    assert onset_message(onsets) == [
        "'b' has NaN/Inf activations since epoch 2: 12 NaN/Inf values on the probe batch "
        "(4 samples); 2 later layers too"
    ]
    # The next epoch NaN reaches the first layer too (training spreads it backwards): it
    # follows the finding that began earlier.
    _, onsets = monitor.observe(2, [nan, nan, nan, nan])
    assert [(f.layer, f.severity, f.origin) for f in onsets] == [("a", "info", "b")]
    assert onset_message(onsets) == []


@pytest.mark.backend_independent
def test_stalled_when_a_trainable_layer_with_weights_did_not_move():
    """No change at all since the last logged epoch: stalled for a trainable layer with
    weights, following a saturated layer after it; not for a pooling or a frozen layer."""
    layers = [conv("conv"), conv("pool", has_weights=False), conv("frozen", trainable=False),
              conv("dense", channels=16, values=4, activation="sigmoid")]  # fmt: skip
    monitor = HealthMonitor(layers, samples=4)
    still = Health(0, math.nan, math.nan, 1.0, 0, change=0.0)
    active, _ = monitor.observe(0, [Health(0, math.nan, math.nan, 1.0, 0)] * 4)
    assert active == [[], [], [], []]  # no change yet at the first logged epoch
    active, onsets = monitor.observe(1, [still, still, still, Health(0, 0.0, 0.05, 1.0, 0, change=0.01)])
    assert [[f.kind for f in a] for a in active] == [["stalled"], [], [], []]
    assert "did not change since the previous logged epoch (change 0)" in active[0][0].detail
    assert onsets[0].severity == "warning"
    pinned = Health(0, 0.6, 0.3, 1.0, 0, change=0.0)
    monitor = HealthMonitor(layers, samples=4)
    monitor.observe(0, [Health(0, math.nan, math.nan, 1.0, 0)] * 4)
    _, onsets = monitor.observe(1, [still, still, still, pinned])
    assert [(f.layer, f.kind, f.severity, f.origin) for f in onsets] == [
        ("conv", "stalled", "info", "dense"), ("dense", "saturated", "warning", None)
    ]


@pytest.mark.backend_independent
def test_frozen_layers_inputs_and_outputs():
    """A frozen layer's finding is info; an input is judged for NaN only; an output's
    saturation (a confident softmax) is not judged."""
    layers = [
        conv("input", channels=1, activation=None, model_input=True),
        conv("frozen", trainable=False),
        conv("head", channels=10, values=4, activation="softmax", model_output=True),
    ]
    monitor = HealthMonitor(layers, samples=4)
    _, onsets = monitor.observe(0, [healthy(constant=1), healthy(constant=8), healthy(at_high=0.1)])
    assert [(f.layer, f.kind, f.severity, f.frozen) for f in onsets] == [
        ("frozen", "dead", "info", True)
    ]
    assert onset_message(onsets) == []  # info is not warned of


@pytest.mark.backend_independent
def test_saturation_per_kind_of_bound():
    """Two-sided bounds add up; ReLU6 counts its top only; a softmax counts near-one-hot rows;
    an unknown activation its observed maximum."""
    sigmoid = conv("s", activation="sigmoid")
    assert Health(0, 0.3, 0.25, 1.0, 0).saturation(sigmoid) == pytest.approx(0.55)
    assert Health(0, 0.9, 0.2, 1.0, 0).saturation(conv("r", activation="relu6")) == 0.2
    softmax = conv("p", channels=10, activation="softmax")
    assert Health(0, 0.9, 0.06, 1.0, 0).saturation(softmax) == pytest.approx(0.6)
    assert Health(0, math.nan, 0.7, 1.0, 0).saturation(conv("x", activation="relu")) == 0.7
    monitor = HealthMonitor([sigmoid], samples=2)
    (found,), _ = monitor.observe(0, [Health(0, 0.3, 0.25, 1.0, 0)])
    assert found[0].kind == "saturated"
    assert found[0].detail == "55% of its sigmoid values are at a bound (0 or 1) on the probe batch (2 samples)"


@pytest.mark.backend_independent
def test_findings_round_trip_through_their_json():
    """What the writer stores is what every reader gets back; foreign JSON is not a finding."""
    finding = tags.Finding("b/c", "nonfinite", 3, "info", 7.0, "7 NaN/Inf values", origin="a")
    (back,) = tags.findings_from_json(tags.health_json([finding]), "b/c")
    assert back == finding
    assert tags.findings_from_json("not json", "x") is None
    assert tags.findings_from_json('{"findings": [{"kind": "dead"}, 3]}', "x") == []


# -- trained models, a fault injected at epoch index 1 (every backend) -----------------------


EPOCHS = 3


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """The article CNN trained once per fault kind (and once without), each run in its own
    directory of one log directory; the tbviz warnings each raised."""
    root = tmp_path_factory.mktemp("health")
    keras.utils.set_random_seed(0)
    (x, y), (x_test, _) = mnist(256)
    raised = {}
    for kind in [None, *FAULTS]:
        keras.utils.set_random_seed(0)
        model, (x_fit, y_fit, probes), callbacks = article(x, y, x_test, kind, at=1)
        logger = ActivationLogger(probes[:4], log_dir=root / (kind or "healthy"), layers="all")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x_fit, y_fit, epochs=EPOCHS, batch_size=64, verbose=0,
                      callbacks=[*callbacks, logger])  # fmt: skip
        raised[kind or "healthy"] = [w for w in caught if issubclass(w.category, LayerHealthWarning)]
    return root, raised


def warnings_of(result):
    return [(j.finding.layer, j.finding.kind, j.finding.since)
            for j in result.findings() if j.finding.severity == "warning"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FAULTS))
def test_each_fault_is_found_in_its_layer_at_its_epoch(faults, kind):
    """The injected fault is the run's one warning-level finding: its kind, its layer, step 1;
    one onset warning says so."""
    root, raised = faults
    result = read_activations(root / kind)
    assert result.problems == []
    layer = FAULTS[kind][0]
    assert warnings_of(result) == [(layer, kind, 1)]
    (message,) = [str(w.message) for w in raised[kind]]
    assert message.startswith(f"tbviz.ActivationLogger: '{layer}' ") and "since epoch 2:" in message
    # The numbers behind it are logged as scalars too, at every step.
    steps = [s for s, _ in result.scalars[tags.tag(tags.RMS, layer)]]
    assert steps == list(range(EPOCHS))


@pytest.mark.slow
def test_a_healthy_run_has_no_warning(faults):
    """The article CNN trained without a fault: no warning-level finding, no health warning."""
    root, raised = faults
    result = read_activations(root / "healthy")
    assert result.health and warnings_of(result) == []
    assert raised["healthy"] == []


@pytest.mark.slow
def test_a_layer_gone_all_nan_is_pictured_every_epoch(faults):
    """After a NaN weight the whole network is NaN the next epoch: every layer is still logged
    at every step, a NaN layer drawn magenta, the NaN warning names the first layer only and
    every later finding follows it (TensorFlow's fused conv + ReLU turns NaN into 0: dead)."""
    root, raised = faults
    result = read_activations(root / "nonfinite")
    pictured = {t: [s.step for s in series] for t, series in result.images.items()}
    assert pictured and all(steps == list(range(EPOCHS)) for steps in pictured.values()), pictured
    last = [s for s in result.images[tags.tag(tags.IMAGE, "dense")] if s.step == EPOCHS - 1][0]
    picture = decode_png(last.pngs[0])
    magenta = np.all(picture == tags.NONFINITE_COLOR, axis=-1)
    assert magenta.mean() > 0.5, "the NaN maps are drawn in the NaN colour"
    (message,) = [str(w.message) for w in raised["nonfinite"]]
    assert "'dense' has NaN/Inf activations since epoch 2" in message
    followers = {j.finding.layer for j in result.findings() if j.finding.origin == "dense"}
    assert {"conv1", "conv2", "softmax"} <= followers


@pytest.mark.slow
@pytest.mark.backend_independent
def test_report_prints_the_findings_as_json_and_as_a_table(faults):
    """``tbviz report --json`` gives every run's findings with epochs as Keras prints them;
    without it, a table per run; exit status 0 either way."""
    root, _ = faults
    process = run_tbviz("report", str(root), "--json")
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout)
    assert {r["run"] for r in report["runs"]} == {f"{k}/activations" for k in ["healthy", *FAULTS]}
    warned = {(f["run"], f["layer"], f["kind"], f["since"], f["since_step"])
              for f in report["findings"] if f["severity"] == "warning"}  # fmt: skip
    assert warned == {(f"{kind}/activations", layer, kind, 2, 1) for kind, (layer, _) in FAULTS.items()}
    dead = next(f for f in report["findings"] if f["kind"] == "dead" and f["severity"] == "warning")
    assert dead["message"].startswith("'conv2' is dead since epoch 2: 32 of 32 channels output 0")
    assert dead["ongoing"] is True and dead["until"] == EPOCHS

    process = run_tbviz("report", str(root), "--run", "dead/activations")
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert lines[0] == "run 'dead/activations' (3 logged, epochs 1-3): 1 warning, 1 info"
    assert lines[1].split() == ["severity", "layer", "kind", "since", "until"]
    assert lines[2].split()[:5] == ["warning", "conv2", "dead", "2", "now"]


@pytest.mark.slow
def test_healthy_models_of_every_kind_raise_no_warning(tmp_path):
    """A residual network with batch norm, a frozen backbone under a new head, a transformer
    encoder and an LSTM, trained two epochs on MNIST: no warning-level finding."""
    keras.utils.set_random_seed(0)
    (x, y), (x_test, _) = mnist(256)
    for name, make in HEALTHY.items():
        if name == "article CNN":
            continue  # trained by the faults fixture
        keras.utils.set_random_seed(0)
        model, (x_fit, y_fit, probes), callbacks = make(x, y, x_test)
        log_dir = tmp_path / name.replace(" ", "_")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x_fit, y_fit, epochs=2, batch_size=64, verbose=0,
                      callbacks=[*callbacks, ActivationLogger(probes[:4], log_dir=log_dir, layers="all")])  # fmt: skip
        result = read_activations(log_dir)
        assert result.health, name
        assert warnings_of(result) == [], name
        said = [str(w.message) for w in caught if issubclass(w.category, LayerHealthWarning)]
        assert said == [], (name, said)


def test_health_off_writes_no_findings_but_still_warns_of_nan(tmp_path):
    """``health=False``: no health tags, and a NaN layer is still warned of, once."""
    keras.utils.set_random_seed(0)
    (x, y), (x_test, _) = mnist(128)
    model, (x_fit, y_fit, probes), callbacks = article(x, y, x_test, "nonfinite", at=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x_fit, y_fit, epochs=2, batch_size=64, verbose=0,
                  callbacks=[*callbacks, ActivationLogger(probes[:2], log_dir=tmp_path, layers=["conv1", "dense"], health=False)])  # fmt: skip
    result = read_activations(tmp_path)
    assert not result.health
    assert not {t for t in result.tags() if tags.parse_tag(t)[0] in (*tags.HEALTH_SCALAR_KINDS, tags.HEALTH)}
    said = [str(w.message) for w in caught if issubclass(w.category, LayerHealthWarning)]
    assert len(said) == 1 and "NaN/Inf" in said[0], said
    assert os.listdir(tmp_path / tags.RUN_NAME)


# What the browser test reads of the tab: the findings list and the compare view's pictures.
FINDINGS_PAGE = """
return {
  title: document.querySelector('#findings h2')?.textContent ?? '',
  findings: [...document.querySelectorAll('#findings-list button')].map((b) => ({
    layer: b.dataset.layer, kind: b.dataset.kind, since: b.dataset.since, text: b.textContent,
    warning: b.classList.contains('warning')})),
  compare: [...document.querySelectorAll('#compare img')].map((img) => ({
    layer: img.dataset.layer, step: img.dataset.step, side: img.className,
    loaded: img.complete && img.naturalWidth > 0})),
  marked: [...document.querySelectorAll('#grid td.health-warning img')].map((img) => [img.dataset.layer, img.dataset.step]),
};
"""


@pytest.mark.slow
@pytest.mark.backend_independent
def test_the_tab_lists_the_findings_and_shows_one_at_its_onset(faults, tmp_path, monkeypatch):
    """On a broken run the ACTIVATIONS tab lists its findings, marks the grid where they hold,
    and a click on one compares its layer at the epoch before the onset with the onset."""
    from _browser_support import chromium, open_tab, severe_errors, wait
    from _tensorboard_support import Server
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")
    root, _ = faults
    server = Server(root / "dead", "--load_fast=false")
    browser = None
    try:
        browser = chromium(tmp_path / "profile")
        open_tab(browser, server.url)
        page = wait(browser, lambda p: p["findings"] and p["marked"], "the findings", script=FINDINGS_PAGE)
        assert page["title"] == "Layer health: 1 warning, 1 info"
        assert [(f["layer"], f["kind"], f["since"], f["warning"]) for f in page["findings"]] == [
            ("conv2", "dead", "1", True), ("pool2", "dead", "1", False)
        ]
        assert "since epoch 2" in page["findings"][0]["text"]
        assert {layer for layer, _ in page["marked"]} == {"conv2"}
        assert {int(step) for _, step in page["marked"]} == set(range(1, EPOCHS))
        browser.find_element(By.CSS_SELECTOR, "#findings-list button[data-layer='conv2']").click()
        page = wait(browser, lambda p: p["compare"] and all(i["loaded"] for i in p["compare"]),
                    "the onset", script=FINDINGS_PAGE)  # fmt: skip
        assert {(i["layer"], i["side"], i["step"]) for i in page["compare"]} == {
            ("conv2", "a", "0"), ("conv2", "b", "1"), ("conv2", "difference", "1")
        }
        assert severe_errors(browser) == []
    finally:
        if browser is not None:
            browser.quit()
        server.close()
