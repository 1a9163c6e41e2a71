"""Headless Chromium for the viewer's tests: the tab in TensorBoard's iframe, or an HTML file from disk.

`PAGE` reads the viewer's state in one go (what each view shows, whether its
pictures loaded, how large they are drawn); `wait` reads it until a condition
holds. Debian's chromium and chromium-driver, nothing downloaded.
"""

from __future__ import annotations

import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tbviz.plugin import PLUGIN_NAME

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver, installed by .ci/run

# The viewer's state, read in one go (in its document: TensorBoard's iframe, or the page; the
# `arguments[0]`-th viewer of a page that holds several).
PAGE = """
const root = document.querySelectorAll('.tbviz')[arguments[0] ?? 0];
if (!root) return null;
const all = (selector) => [...root.querySelectorAll(selector)];
// A data: URL is long: its ends and length tell pictures apart.
const shorter = (src) => src.length > 300 ? `${src.slice(0, 100)}…${src.length}…${src.slice(-100)}` : src;
const images = (selector) => all(selector).map((img) => ({
  layer: img.dataset.layer, step: img.dataset.step, src: shorter(img.getAttribute('src') ?? ''),
  loaded: img.complete && img.naturalWidth > 0, hidden: img.hidden,
  width: img.width, height: img.height, natural: img.naturalWidth,
  factor: Number(img.dataset.factor), rendering: getComputedStyle(img).imageRendering,
  mean: img.dataset.mean === undefined ? null : Number(img.dataset.mean),
  range: img.dataset.range === undefined ? null : Number(img.dataset.range)}));
const slider = root.querySelector('#epoch-slider');
const zoom = root.querySelector('#zoom');
const text = (selector) => root.querySelector(selector)?.textContent ?? null;
const box = (node) => { if (!node) return null; const r = node.getBoundingClientRect(); return {top: r.top, left: r.left, bottom: r.bottom, right: r.right}; };
return {
  view: root.querySelector('.tabs button.active')?.dataset.view ?? null,
  grid: images('#grid tbody img'),
  columns: all('#grid thead th').slice(1).map((th) => th.textContent),
  labels: all('#grid tbody th.layer').map((th) => ({text: th.innerText, bar: th.querySelector('.colour-bar')?.style.background ?? ''})),
  rows: all('#grid tbody tr').map((tr) => tr.className),
  summary: text('.controls .summary'),
  slider: slider && slider.isConnected ? Number(slider.value) : null,
  sliderLabel: text('#epoch-label'),
  sliderImages: images('#slider-list img'),
  differences: images('#compare img.difference'),
  differenceLegends: all('#compare .difference-legend').map((node) => node.innerText),
  compareColumns: all('#compare thead th').map((th) => th.textContent),
  explanation: text('#compare-explanation') ?? '',
  heat: all('#heatmap .heat-cell').map((cell) => ({
    layer: cell.dataset.layer, step: cell.dataset.step, coloured: cell.style.background !== '',
    zero: cell.classList.contains('zero')})),
  heatSteps: all('#heatmap .step').map((node) => node.textContent),
  legend: text('#change-legend'),
  probes: all('#probe button').map((b) => ({probe: b.dataset.probe, pressed: b.getAttribute('aria-pressed'),
    thumb: b.querySelector('img')?.getAttribute('src') ?? null,
    loaded: !!b.querySelector('img') && b.querySelector('img').naturalWidth > 0})),
  zoom: zoom && !zoom.hidden ? {caption: text('#zoom-caption'), step: root.querySelector('#zoom-image')?.dataset.step ?? null,
    loaded: !!root.querySelector('#zoom-image') && root.querySelector('#zoom-image').naturalWidth > 0,
    numbers: Object.fromEntries(all('#zoom-numbers tr').map((tr) => [tr.dataset.kind, tr.querySelector('td').textContent]))} : null,
  filter: root.querySelector('#filter').value,
  clearShown: !root.querySelector('#filter-clear').hidden,
  focused: document.activeElement ? (document.activeElement.id || document.activeElement.className) : null,
  runs: all('#run option').map((o) => o.value),
  layerNames: all('th.layer .name, figcaption, .layer-label .name').map((node) => node.textContent),
  notices: all('#notices li').map((node) => node.textContent),
  failed: all('.failed').map((node) => node.textContent),
  inlineNotices: all('.notice-inline').map((node) => node.textContent),
  injected: document.querySelectorAll('img[src="x"]').length,
  boxes: {scroll: box(root.querySelector('.scroll')), controls: box(root.querySelector('.controls-bar')),
    header: box(root.querySelector('#grid thead th:nth-child(2)')),
    firstLabel: box([...root.querySelectorAll('#grid tbody th.layer')].find((th) => th.getBoundingClientRect().bottom > root.querySelector('.scroll').getBoundingClientRect().top + 150)),
    slider: box(slider), bar: box(root.querySelector('.bar'))},
  scrolled: {top: root.querySelector('.scroll').scrollTop, left: root.querySelector('.scroll').scrollLeft},
};
"""

# TensorBoard's app may put the plugin's iframe inside shadow roots.
FIND_FRAME = """
function* deep(root) {
  for (const el of root.querySelectorAll('*')) {
    yield el;
    if (el.shadowRoot) yield* deep(el.shadowRoot);
  }
}
return [...deep(document)].find((el) => el.tagName === 'IFRAME'
  && (el.getAttribute('src') || '').includes('plugin_entry.html?name=activations')) || null;
"""

# Every resource the document asked for (fetched or not): what "offline" is checked against.
RESOURCES = "return [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)];"


def chromium(profile, size: str = "1280,900", *, offline: bool = False) -> webdriver.Chrome:
    """Headless Debian Chromium through the system chromedriver; nothing is downloaded.

    `offline`: every host name fails to resolve and every connection goes to a dead proxy, so
    a page that needed the network would show it.
    """
    profile.mkdir(exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--window-size={size}", f"--user-data-dir={profile}",
    ]  # fmt: skip
    if offline:
        flags += ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9"]
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def open_tab(browser: webdriver.Chrome, url: str) -> None:
    """Opens TensorBoard at the ACTIVATIONS tab and enters the plugin's iframe."""
    browser.get(f"{url}/#{PLUGIN_NAME}")
    browser.switch_to.frame(find_frame(browser))


def find_frame(browser: webdriver.Chrome):
    deadline = time.monotonic() + 90
    while True:
        frame = browser.execute_script(FIND_FRAME)
        if frame is not None:
            return frame
        assert time.monotonic() < deadline, "TensorBoard showed no iframe for the ACTIVATIONS tab"
        time.sleep(0.25)


def click_view(browser: webdriver.Chrome, view: str, viewer: int = 0) -> None:
    viewers = browser.find_elements(By.CSS_SELECTOR, ".tbviz")
    viewers[viewer].find_element(By.CSS_SELECTOR, f"button[data-view='{view}']").click()


def wait(
    browser: webdriver.Chrome, ready, what: str, timeout: float = 60, viewer: int = 0, script: str = PAGE
) -> dict:
    """Reads the page (its `viewer`-th viewer, with `script`) until ``ready(page)``; fails naming
    `what` and the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        page = browser.execute_script(script, viewer)
        if page is not None and ready(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never showed; last state: {page!r}")
        time.sleep(0.25)


def severe_errors(browser: webdriver.Chrome) -> list[dict]:
    """The console's errors (TensorBoard's own warnings are not errors)."""
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
