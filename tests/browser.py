"""A headless Chromium for the page tests: open a local page, list its images, take a screenshot.

The browser is driven over the Chrome DevTools protocol through a pipe (``--remote-debugging-pipe``:
JSON messages ending in a NUL byte on file descriptors 3 and 4 of the browser). That needs no Python
package, no driver binary matched to the browser's version and no network port, only the browser;
the few protocol methods used (Target, Page, Runtime, Emulation) have been stable for years.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Debian's package is `chromium`; the other names are what other systems call the same browser.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, no sandbox (CI runs as root), nothing that reaches for the network on its own (on a closed
# network those background connections are refused and can stall the browser), and shared memory in
# /tmp rather than /dev/shm, which is tiny in containers.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
WINDOW = (1200, 800)  # CSS pixels; the screenshot covers the whole page, however long
MAX_SHOT_HEIGHT = 6000  # a runaway page is cut here rather than making a huge PNG

# What the test needs to know about a loaded page, read in the page itself.
_PAGE_FACTS = """({
  url: location.href,
  title: document.title,
  heading: (document.querySelector("h1") || {textContent: ""}).textContent,
  images: Array.from(document.images, image => ({
    src: image.getAttribute("src"), complete: image.complete, naturalWidth: image.naturalWidth})),
  links: Array.from(document.links, link => link.href),
})"""


class BrowserError(RuntimeError):
    """The browser could not be started, died, answered with an error or did not answer in time."""


@dataclass
class PageView:
    """A page as the browser showed it: its title, first heading, images and a screenshot (PNG)."""

    url: str
    title: str
    heading: str
    images: list[dict]  # {"src": the attribute, "complete": bool, "naturalWidth": int} per <img>
    links: list[str]  # every <a href>, resolved against the page's URL
    screenshot: Path

    def broken_images(self) -> list[str]:
        """The src of every image that did not load (an image loaded is complete and has a width)."""
        return [image["src"] for image in self.images if not (image["complete"] and image["naturalWidth"] > 0)]


def browser_names() -> list[str]:
    """The browsers to look for: $CHROMIUM (a name or a path) if set, else BROWSER_NAMES."""
    return [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else list(BROWSER_NAMES)


def find_browser() -> str | None:
    """The first of ``browser_names()`` found (on PATH, or as a path); None if none is."""
    return next((found for name in browser_names() if (found := shutil.which(name))), None)


class Browser:
    """One headless Chromium process; use as a context manager, then ``view(url, screenshot_file)``."""

    def __init__(self, executable: str, work_dir: Path, timeout: float = 60.0):
        self.timeout = timeout
        self.log_file = work_dir / "browser.log"
        work_dir.mkdir(parents=True, exist_ok=True)
        # The browser reads commands on its fd 3 and writes answers on its fd 4. The pipes are handed
        # to a shell as its stdin and stdout; it moves them to 3 and 4 and then becomes the browser
        # (subprocess's preexec_fn could place them too, but is unsafe with threads, torch's included).
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()
        place_pipes = 'exec 3<&0 4>&1 0</dev/null 1>&2; exec "$@"'
        command = ["/bin/sh", "-c", place_pipes, "sh", executable, *FLAGS,
                   f"--user-data-dir={work_dir / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                   "--remote-debugging-pipe", "about:blank"]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command, stdin=to_browser_read, stdout=from_browser_write, stderr=log)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._to_browser = to_browser_write
        self._from_browser = from_browser_read
        self._buffer = b""
        self._events: list[dict] = []
        self._next_id = 0

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._call("Browser.close")
            except BrowserError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    # ----------------------------------------------------------------------- the protocol

    def _log_tail(self) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return text[-1500:]

    def _receive(self, deadline: float) -> dict:
        """The next message from the browser (an answer or an event)."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"the browser did not answer within {self.timeout:.0f} s; its log:\n"
                                   + self._log_tail())
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"the browser exited (status {self.process.poll()}); its log:\n"
                                   + self._log_tail())
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"the browser exited; its log:\n{self._log_tail()}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") != self._next_id:
                self._events.append(answer)
                continue
            if "error" in answer:
                raise BrowserError(f"{method} failed: {answer['error']}")
            return answer["result"]

    def _wait_for_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event
            self._events.append(self._receive(deadline))

    # ----------------------------------------------------------------------- pages

    def view(self, url: str, screenshot: Path) -> PageView:
        """Load ``url`` in a new tab, wait for its load event (every image loaded or failed), read
        the page's title, first heading and images, and save a screenshot of the whole page."""
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self._call("Page.enable", session)
            self._call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0], height=WINDOW[1],
                       deviceScaleFactor=1, mobile=False)
            self._events.clear()  # only this navigation's load event counts
            navigation = self._call("Page.navigate", session, url=url)
            if navigation.get("errorText"):
                raise BrowserError(f"could not open {url}: {navigation['errorText']}")
            self._wait_for_event("Page.loadEventFired", session)
            facts = self._call("Runtime.evaluate", session, expression=_PAGE_FACTS,
                               returnByValue=True)["result"]["value"]
            size = self._call("Page.getLayoutMetrics", session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": max(WINDOW[0], size["width"]),
                    "height": min(MAX_SHOT_HEIGHT, max(WINDOW[1], size["height"])), "scale": 1}
            shot = self._call("Page.captureScreenshot", session, format="png", clip=clip,
                              captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            self._call("Target.closeTarget", targetId=target)
        return PageView(url=facts["url"], title=facts["title"], heading=facts["heading"].strip(),
                        images=facts["images"], links=facts["links"], screenshot=screenshot)
