"""Open every page of the built docs in headless Chromium and check what a reader would see.

``make docs-check`` runs it on build/site; tests/test_api_docs.py runs it on the suite's build
(skipped, saying why, where no Chromium is installed). Each page is opened from disk (``file://``)
with every host name unresolvable, at a desktop width (1280 px) and a phone's (390 px), and must:

* load nothing from the network and log no console error, failed load or uncaught exception;
* not scroll sideways (``scrollWidth <= clientWidth``; wide tables, code and formulas scroll inside
  their own box);
* (the home page) find pages with its search box, which runs in the page (tools/docs/theme);
* show its formulas as math: every ``<math>`` element laid out by the browser's MathML engine with
  a size, and no LaTeX left as text (a ``\\command``, ``$...$`` or ``:math:`` outside code).

Chromium is driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``: no port,
no driver, no dependency). Usage: ``python tools/docs/check.py [SITE] [--shots DIR [PAGE ...]]``;
``--shots`` also saves a PNG of each named page (all of them if none is named) at each width.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIDTHS = (1280, 390)
SEARCH = "sharpness"  # a word every build's search index has
HEIGHT = 900
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing on the network can be reached
    "--remote-debugging-pipe",
)
# What the page itself reports, read once it has loaded.
PROBE = r"""(() => {
  const se = document.scrollingElement, width = se.clientWidth;
  const main = document.querySelector('[role="main"]') || document.body;
  const maths = [...document.querySelectorAll('math')];
  const undrawn = maths.filter(m => {
    const r = m.getBoundingClientRect(), display = getComputedStyle(m).display;
    return !display.includes('math') || r.width === 0 || r.height === 0;
  }).map(m => m.getAttribute('data-tex') || m.textContent);
  const raw = [], walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  const latex = /\\[A-Za-z]{2,}|\\[|{}]|:math:|(^|[^\w$])\$[^\s$][^$]*[^\s\\$]\$(?![\w$])/;
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest('code, pre, math, script, style, kbd')) continue;
    if (latex.test(node.textContent)) raw.push(node.textContent.trim().slice(0, 120));
  }
  const wide = se.scrollWidth <= width ? [] : [...document.querySelectorAll('body *')].filter(el => {
    const r = el.getBoundingClientRect();
    return r.right > width + 1 && r.width > 0 && !el.closest('.table-scroll, pre, .math-display');
  }).slice(0, 5).map(el => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '')
                      + ' ' + (el.textContent || '').trim().slice(0, 60));
  return {scrollWidth: se.scrollWidth, clientWidth: width, maths: maths.length, undrawn, raw, wide};
})()"""


def find_browser() -> str | None:
    """The Chromium to run: ``$CHROMIUM`` or the first of :data:`BROWSERS` on the PATH."""
    return os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)


class Browser:
    """Headless Chromium and a DevTools protocol session to one tab, over ``--remote-debugging-pipe``
    (the browser reads commands on its fd 3 and writes replies and events on its fd 4, each a JSON
    message ended by a NUL byte)."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.timeout, self._next, self._buffer = timeout, 0, b""
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="samkit-docs-check-")
        to_browser, self._from_us = os.pipe()
        self._to_us, from_browser = os.pipe()

        def fds_3_and_4() -> None:  # in the child: its ends of the pipes as fd 3 and fd 4
            read, write = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=fds_3_and_4,
        )
        os.close(to_browser)
        os.close(from_browser)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._to_us], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._to_us, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._from_us, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    def open(self, url: str) -> list[str]:
        """Load ``url``; what went wrong while it loaded, in words."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return [e for e in map(_error, self.events) if e]

    def probe(self, width: int) -> dict[str, Any]:
        """What :data:`PROBE` reports of the open page laid out ``width`` pixels wide (what goes
        wrong meanwhile is added to :attr:`events`)."""
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        self.call("Runtime.evaluate", session=True, awaitPromise=True,  # the layout at that width
                  expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        result = self.call("Runtime.evaluate", session=True, expression=PROBE, returnByValue=True)
        return result["result"]["value"]

    def search(self, query: str) -> int:
        """Type ``query`` into the open page's search box: how many results it lists (what went
        wrong meanwhile is left in :attr:`events`)."""
        self.events.clear()
        typed = (
            "(() => { const box = document.getElementById('mkdocs-search-query');"
            f" box.value = {json.dumps(query)}; box.dispatchEvent(new KeyboardEvent('keyup')); }})()"
        )
        self.call("Runtime.evaluate", session=True, expression=typed)
        count = "document.querySelectorAll('#mkdocs-search-results article').length"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            found = self.call("Runtime.evaluate", session=True, expression=count, returnByValue=True)
            if found["result"]["value"]:
                return int(found["result"]["value"])
            time.sleep(0.1)
        return 0

    def screenshot(self, path: Path) -> None:
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
        shot = self.call("Page.captureScreenshot", session=True, format="png", clip=clip,
                         captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_us)
        os.close(self._from_us)
        self._profile.cleanup()


def _error(event: dict[str, Any]) -> str | None:
    """An event that a reader would see as something broken, in words; else None."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip()
    if method == "Network.requestWillBeSent":
        url = params["request"]["url"]
        if not url.startswith(("file:", "data:", "blob:", "about:")):
            return f"network request: {url}"
    if method == "Network.loadingFailed" and not params.get("canceled"):
        return f"failed to load: {params.get('errorText')}"
    return None


@dataclass
class Result:
    pages: int = 0
    formulas: int = 0  # <math> elements drawn, over all pages (at the desktop width)
    problems: list[str] = field(default_factory=list)


def pages_of(site: Path) -> list[Path]:
    """Every page of the site but the 404 page (its links are for a web server's root)."""
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


def check(site: Path, executable: str, shots: Path | None = None, shot_pages: tuple[str, ...] = ()) -> Result:
    """Open every page of ``site`` at each of :data:`WIDTHS`; the problems found, in words."""
    result = Result()
    browser = Browser(executable)
    try:
        for page in pages_of(site):
            name = page.relative_to(site).as_posix()
            result.pages += 1
            result.problems += [f"{name}: {e}" for e in browser.open(page.resolve().as_uri())]
            for width in WIDTHS:
                seen = browser.probe(width)
                where = f"{name} at {width}px"
                if seen["scrollWidth"] > seen["clientWidth"]:
                    result.problems.append(
                        f"{where}: scrolls sideways ({seen['scrollWidth']} > {seen['clientWidth']} px; "
                        f"too wide: {seen['wide']})"
                    )
                result.problems += [f"{where}: formula not drawn as math: {t!r}" for t in seen["undrawn"]]
                result.problems += [f"{where}: LaTeX left as text: {t!r}" for t in seen["raw"]]
                if width == WIDTHS[0]:
                    result.formulas += seen["maths"] - len(seen["undrawn"])
                if shots is not None and (not shot_pages or name in shot_pages):
                    shots.mkdir(parents=True, exist_ok=True)
                    browser.screenshot(shots / f"{name.replace('/', '_')[:-5]}-{width}.png")
            result.problems += [f"{name}: {e}" for e in map(_error, browser.events) if e]
            if name == "index.html":
                if not browser.search(SEARCH):
                    result.problems.append(f"{name}: the search finds nothing for {SEARCH!r}")
                result.problems += [f"{name} (searching): {e}" for e in map(_error, browser.events) if e]
    finally:
        browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default="build/site", type=Path)
    parser.add_argument("--shots", type=Path, help="save a PNG of each page named (default all), whole")
    parser.add_argument("pages", nargs="*", help="pages to screenshot, e.g. optimizers.html api/index.html")
    args = parser.parse_intermixed_args(argv)
    executable = find_browser()
    if executable is None:
        print("no Chromium found (apt-get install chromium, or set CHROMIUM)", file=sys.stderr)
        return 2
    if not (args.site / "index.html").exists():
        print(f"{args.site} has no index.html: build the site first (make docs)", file=sys.stderr)
        return 2
    result = check(args.site, executable, args.shots, tuple(args.pages))
    for problem in result.problems:
        print(problem)
    print(f"{result.pages} pages at widths {', '.join(map(str, WIDTHS))} px: {result.formulas} formulas "
          f"drawn as MathML, {len(result.problems)} problems")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
