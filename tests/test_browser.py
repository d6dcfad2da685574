"""The built book in headless Chromium at 1280 px, driven through the Chrome DevTools Protocol (a small stdlib
WebSocket client below, no browser-automation package): on every page no JavaScript error in the console, no
resource that fails to load, no horizontal scroll around a figure, every figure at least 600 px wide with its
smallest text at least 9 CSS px, and every table preceded by its own caption.

Needs a built book (``book/_build/html``, where README command 1 builds it, or the folder ``MSPARSE_BOOK_HTML``
names) and chromium.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from msparse import book as mb

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_DEFAULT_HTML = REPO / "book" / "_build" / "html"   # where README command 1 builds it
_HTML = os.environ.get("MSPARSE_BOOK_HTML") or (str(_DEFAULT_HTML) if (_DEFAULT_HTML / "index.html").is_file() else None)
WIDTH = 1280                  # the reader's window
MIN_FIGURE_PX = 600           # a figure narrower than this on a 1280 px window is a thumbnail
MIN_TEXT_PX = 9               # the smallest text in a figure, in CSS px as rendered
PAGES = [f"{n}.html" for n, _ in mb.BOOK_FILES] + [f"_executed/{n}.html" for n, _ in mb.NOTEBOOKS]

def needs_book_and_browser(test):
    """Skip (with the reason) a test that loads the built book in Chromium when either is missing."""
    test = pytest.mark.skipif(not _HTML, reason="no built book: run python -m msparse book (or set MSPARSE_BOOK_HTML)")(test)
    return pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")(test)


# ------------------------------------------------------------------------------------------------
# a minimal WebSocket client (RFC 6455: client frames masked, server frames not) for the DevTools endpoint
class _WebSocket:
    def __init__(self, url: str, timeout: float = 30.0):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            buf += chunk
        return buf

    def send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 0x8:
                raise ConnectionError("DevTools closed the connection")
            if op in (0x9, 0xA):     # ping / pong: not used by DevTools, skipped
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class Browser:
    """Headless Chromium with one page target, driven over the DevTools Protocol; events are collected."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="msparse-chromium-")   # removed by close()
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", f"--window-size={WIDTH},900",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)   # its own process group: close() ends Chromium's helpers with it
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) == 2):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()
        self.ws = _WebSocket(f"ws://127.0.0.1:{port}{path}")
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=900,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.time() + timeout
        while time.time() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def _pump(self, seconds: float) -> None:
        """Collect events for ``seconds`` (a harmless round trip keeps the reads bounded)."""
        end = time.time() + seconds
        while time.time() < end:
            self.call("Runtime.evaluate", session=True, expression="1")
            time.sleep(0.05)

    def load(self, url: str, settle: float = 1.0, timeout: float = 30) -> list[dict]:
        """Navigate to ``url``, wait for the load event and for the network to be quiet, return its events."""
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        deadline = time.time() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {timeout} s")
            self._pump(0.1)
        quiet = time.time()
        while time.time() - quiet < settle and time.time() < deadline:
            n = len(self.events)
            self._pump(0.2)
            if len(self.events) != n:
                quiet = time.time()
        return list(self.events)

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def close(self) -> None:
        import signal

        try:
            self.ws.close()
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):   # the whole group: helpers may outlive the browser
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # a helper that is still writing the profile makes one removal fail: retry, then leave the temp folder
            for _ in range(5):
                try:
                    shutil.rmtree(self.profile)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.5)
            shutil.rmtree(self.profile, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# what the checks read from the events and the page
def console_errors(events: list[dict]) -> list[str]:
    """JavaScript exceptions, console.error calls and error log entries (a failed resource load is one)."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {(d.get('exception') or {}).get('description') or d.get('text')} "
                       f"({d.get('url', '')}:{d.get('lineNumber')})")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
    return out


def failed_requests(events: list[dict]) -> list[str]:
    """Requests that failed (missing file, refused network) or answered with an HTTP error status."""
    urls = {p["requestId"]: p["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"
            for p in [e["params"]]}
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"{p.get('errorText')}: {urls.get(p['requestId'], '?')[:160]}")
        elif m == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url'][:160]}")
    return out


#: every visible figure in the article (images of outputs and of the kernel-free slider): its rendered and
#: natural width, whether an ancestor scrolls horizontally; every table with the text of its own caption
_MEASURE = r"""
(() => {
  const article = document.querySelector('article') || document.querySelector('main') || document.body;
  const figs = [];
  for (const img of article.querySelectorAll('img')) {
    if (!img.naturalWidth) { figs.push({src: img.getAttribute('src').slice(0, 80), broken: true}); continue; }
    const r = img.getBoundingClientRect();
    if (r.width === 0) continue;              // a hidden slider frame: its twin is measured
    let scroll = false;
    for (let a = img.parentElement; a && a !== document.body; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (a.scrollWidth > a.clientWidth + 1 && (ox === 'auto' || ox === 'scroll')) { scroll = true; break; }
    }
    figs.push({src: img.getAttribute('src'), width: r.width, natural: img.naturalWidth, scroll: scroll});
  }
  // document order of text blocks and tables: a table's caption is the last text block since the previous table
  const tables = [];
  let caption = '';
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_ELEMENT);
  for (let n = walker.currentNode; n; n = walker.nextNode()) {
    if (n.tagName === 'TABLE') {
      const own = n.querySelector('caption');
      const head = Array.from(n.querySelectorAll('thead th')).map(t => t.textContent.trim()).join(' | ');
      const cells = Array.from(n.querySelectorAll('td, th'));
      tables.push({caption: own ? own.textContent.trim() : caption, head: head.slice(0, 200),
                   text: n.textContent.replace(/\s+/g, ' ').slice(0, 20000),
                   width: n.getBoundingClientRect().width, room: article.clientWidth,
                   cut: cells.filter(c => c.textContent.trim() === '…' || c.textContent.trim() === '...'
                                          || c.scrollWidth > c.clientWidth + 1).length,
                   clipped: n.getBoundingClientRect().right > article.getBoundingClientRect().right + 1});
      caption = '';
      let last = n; while (last.lastElementChild) last = last.lastElementChild;
      walker.currentNode = last;               // skip the table's own cells
    } else if (/^(P|H[1-6]|SUMMARY|CAPTION|FIGCAPTION)$/.test(n.tagName) && n.closest('table') === null
               && n.closest('.cell_input') === null && !/code cell (source|outputs?)$/.test(n.textContent.trim())) {
      const t = n.textContent.trim();
      if (t) caption = t;
    }
  }
  const words = (article.innerText || '').split(/\s+/).filter(w => /\w/.test(w)).length;
  return {figures: figs, tables: tables, words: words,
          pageScroll: document.documentElement.scrollWidth > document.documentElement.clientWidth + 1};
})()
"""


def figure_dpi(src: str, page: Path) -> float:
    """The resolution a figure was saved at (its PNG pHYs chunk; matplotlib writes it), from a file or data URI."""
    from PIL import Image

    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = (page.parent / unquote(src.split("?")[0])).read_bytes()
    dpi = Image.open(io.BytesIO(data)).info.get("dpi")
    assert dpi, f"{src[:60]}: the PNG does not say its resolution (dpi)"
    return float(dpi[0])


def smallest_text_px(width: float, natural: int, dpi: float, min_font_pt: float) -> float:
    """Rendered size, in CSS px, of the figure's smallest text: a ``min_font_pt`` font is ``min_font_pt ·
    dpi / 72`` image pixels tall, and the image is drawn at ``width / natural`` of its pixel size."""
    return min_font_pt * dpi / 72 * width / natural


#: a table of our measurements (a CI column) or of records needs a caption that says which
_WHAT = {"attack": re.compile(r"APGD|AutoAttack|BPDA|PGD|transfer|worst|clean|attack|FGSM|no attack", re.I),
         "n": re.compile(r"\bn\s*=\s*\d"), "α": re.compile(r"α")}


def caption_problems(table: dict) -> list[str]:
    """What a table's caption fails to say: there must be one of its own; a table of our numbers (95% intervals)
    must name the attack, n and α of what it shows."""
    cap = table["caption"]
    if len(cap) < 15:
        return [f"table [{table['head'][:80]}] has no caption of its own (text before it: {cap!r})"]
    if "CI]" in table["head"] or "95%" in table["head"]:
        miss = [k for k, rx in _WHAT.items() if not rx.search(cap)]
        if miss:
            return [f"table [{table['head'][:80]}]: caption {cap[:120]!r} does not say {', '.join(miss)}"]
    return []


# ------------------------------------------------------------------------------------------------
def test_smallest_text_px_follows_the_scale_and_the_resolution():
    assert smallest_text_px(800, 800, 72, 9) == pytest.approx(9)
    assert smallest_text_px(400, 800, 100, 8) == pytest.approx(8 * 100 / 72 / 2)
    assert smallest_text_px(650, 1300, 100, 8) < MIN_TEXT_PX      # a 13-inch figure squeezed into 650 px


def test_caption_problems_catch_a_missing_or_vague_caption():
    ours = {"head": "alpha | ours: robust % [95% CI]", "text": ""}
    assert caption_problems({**ours, "caption": "APGD-CE (20 iterations), n = 100, α ∈ {0, 0.25}, model X"}) == []
    assert caption_problems({**ours, "caption": ""})
    assert "n" in caption_problems({**ours, "caption": "APGD-CE at every α of the grid"})[0]
    assert caption_problems({"head": "paper", "text": "", "caption": "Paper Table 1 (reference values)"}) == []


@pytest.fixture(scope="module")
def pages():
    """Every page of the built book loaded once at 1280 px: {page: (events, measurements)}."""
    root = Path(_HTML).resolve()
    browser = Browser()
    out = {}
    try:
        for page in PAGES:
            path = root / page
            assert path.is_file(), f"{page} is not in the built book"
            events = browser.load(path.as_uri())
            out[page] = (events, browser.evaluate(_MEASURE))
    finally:
        browser.close()
    return out


@needs_book_and_browser
@pytest.mark.parametrize("page", PAGES)
def test_no_javascript_error_and_no_missing_resource(pages, page):
    events, _ = pages[page]
    problems = console_errors(events) + failed_requests(events)
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


@needs_book_and_browser
@pytest.mark.parametrize("page", PAGES)
def test_figures_are_wide_readable_and_do_not_scroll(pages, page):
    from msparse.report.plots import MIN_FONT_PT

    _, m = pages[page]
    path = Path(_HTML).resolve() / page
    assert not m["pageScroll"], f"{page} scrolls horizontally at {WIDTH} px"
    problems = []
    for f in m["figures"]:
        if f.get("broken"):
            problems.append(f"{f['src']}: image does not load")
            continue
        name = f["src"][:60] if not f["src"].startswith("data:") else "an inline figure"
        if f["scroll"]:
            problems.append(f"{name}: scrolls horizontally")
        if f["width"] < MIN_FIGURE_PX:
            problems.append(f"{name}: {f['width']:.0f} px wide (< {MIN_FIGURE_PX})")
        text = smallest_text_px(f["width"], f["natural"], figure_dpi(f["src"], path), MIN_FONT_PT)
        if text < MIN_TEXT_PX:
            problems.append(f"{name}: drawn at {f['width']:.0f} of {f['natural']} px, its {MIN_FONT_PT:g} pt text "
                            f"is {text:.1f} px (< {MIN_TEXT_PX})")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


@needs_book_and_browser
@pytest.mark.parametrize("page", PAGES)
def test_every_table_has_a_caption_saying_what_it_is(pages, page):
    _, m = pages[page]
    problems = [p for t in m["tables"] for p in caption_problems(t)]
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


#: numbers a reader should never see: a raw NaN, a signed zero, a float printed with six or more decimals
_RAW_NUMBER = re.compile(r"\bNaN\b|(?<![\w.])-0\.0+(?![\d])|\b\d+\.\d{6,}\b")
MAX_WORDS = 3000              # visible words of one page (folded text does not count)


def table_problems(table: dict) -> list[str]:
    """A table wider than its column or reaching past it (cut at the right edge), a cell cut short ("…" or text
    that overflows its cell), a raw number (NaN, -0.0, six or more decimals)."""
    name = f"table [{table['head'][:60]}]"
    out = []
    if table["width"] > table["room"] + 1 or table["clipped"]:
        out.append(f"{name} is {table['width']:.0f} px wide in a {table['room']:.0f} px column")
    if table["cut"]:
        out.append(f"{name}: {table['cut']} cell(s) cut short")
    raw = sorted(set(_RAW_NUMBER.findall(table["text"])))
    if raw:
        out.append(f"{name}: raw numbers {raw[:5]}")
    return out


def test_table_problems_catch_wide_cut_and_raw_tables():
    ok = {"head": "a | b", "text": "1.5 2.0 +0.0 pp", "width": 600, "room": 800, "cut": 0, "clipped": False}
    assert table_problems(ok) == []
    assert "wide" in table_problems({**ok, "width": 900})[0]
    assert "cut short" in table_problems({**ok, "cut": 2})[0]
    assert "raw numbers" in table_problems({**ok, "text": "x NaN y"})[0]
    assert "raw numbers" in table_problems({**ok, "text": "Δ -0.0 pp"})[0]
    assert "raw numbers" in table_problems({**ok, "text": "p 0.031250"})[0]


@needs_book_and_browser
@pytest.mark.parametrize("page", PAGES)
def test_tables_fit_their_column_no_cell_is_cut_and_numbers_are_formatted(pages, page):
    _, m = pages[page]
    problems = [p for t in m["tables"] for p in table_problems(t)]
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


@needs_book_and_browser
@pytest.mark.parametrize("page", PAGES)
def test_no_page_shows_more_than_max_words(pages, page):
    _, m = pages[page]
    assert m["words"] <= MAX_WORDS, f"{page} shows {m['words']} words (> {MAX_WORDS}): split or fold it"
