"""The built site (``make docs``) in headless Chromium, Debian's, through a local HTTP server.

Run by ``make docs-test``, not by ``make test``. Pages load with no console error, no failed
request and nothing asked of another host; math is typeset by the site's own MathJax; every
link and anchor between the site's pages resolves; search finds ``check_vjp``. Screenshots of
the pages go to ``docs/_build/screens``.
"""

import functools
import http.server
import shutil
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest
from playwright.sync_api import sync_playwright

BUILD = Path(__file__).parents[1] / "_build"
HTML = BUILD / "html"
SCREENS = BUILD / "screens"

# page -> whether it has math
PAGES = {
    "index.html": False,
    "api/check.html": False,
    "api/rules.html": True,
    "notebooks/01_chain_rule_mlp.html": True,
    "notebooks/04_optimizers.html": True,
    "cli.html": False,
    "guides/checking.html": False,
    "guides/benchmarks.html": False,
}


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no site in {HTML}: run `make docs` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # one line per request is noise in a test's output
        pass


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


def _open(browser, url: str, site: str):
    """``url`` in a new page, MathJax done; the console errors, page errors, failed requests
    and requests to anywhere but ``site`` (refused) seen meanwhile."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status}: {r.url}"))

    def local_only(route):
        if route.request.url.startswith(site):
            route.continue_()
        else:
            problems.append(f"asked another host: {route.request.url}")
            route.abort()

    page.route("**/*", local_only)
    page.goto(url, wait_until="networkidle")
    page.evaluate("() => window.MathJax?.startup?.promise")  # typesetting done, if any
    return page, problems


@pytest.mark.parametrize("path", list(PAGES))
def test_page_loads_clean_and_typesets_its_math(browser, site, path):
    page, problems = _open(browser, site + path, site)
    assert problems == []
    assert page.title() and "404" not in page.title()
    broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !i.naturalWidth).length")
    assert broken == 0, "an image did not load"
    stem = path.removesuffix(".html").replace("/", "-")
    height = min(page.evaluate("document.body.scrollHeight"), 2400)
    clip = {"x": 0, "y": 0, "width": 1280, "height": height}
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / f"{stem}.png", full_page=True, clip=clip)
    figures = page.locator("article img")
    if figures.count():  # a notebook's figure, from its stored outputs
        figures.first.screenshot(path=SCREENS / f"{stem}-figure.png")
    text = page.evaluate(_PROSE)
    typeset = page.locator("mjx-container").count()
    if PAGES[path]:
        assert typeset > 10, f"{typeset} formulas typeset"
        assert page.locator("mjx-merror").count() == 0, "MathJax could not typeset a formula"
    for raw in ("\\frac", "\\partial", "\\sum", "\\hat", "$$", "\\(", "\\["):
        assert raw not in text, f"{raw} left as text: math not typeset"
    page.close()


# The page's text less its code (where TeX may be written on purpose) and typeset math.
_PROSE = """() => {
    const body = document.body.cloneNode(true);
    body.querySelectorAll("pre, code, script, style, mjx-container").forEach(e => e.remove());
    return body.textContent;
}"""


class _Links(HTMLParser):
    """The links (``href``, ``src``) and element ids of one page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(v for k, v in attrs.items() if k in ("id", "name") and v)
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") == "preconnect"):
                self.links.append(attrs[key])


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url) as response:
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError:
        return None


def test_every_internal_link_resolves(site):
    """Crawl every page reachable from the index: each link to the site (a page, a stylesheet,
    a script, an image) answers, and each ``#anchor`` names an element of its page."""
    pages, todo, anchors, missing = {}, [site + "index.html"], [], []
    while todo:
        url = todo.pop()
        if url in pages:
            continue
        body = _get(url)
        if body is None:
            missing.append(url)
            continue
        parsed = _Links()
        if url.endswith(".html"):
            parsed.feed(body)
        pages[url] = parsed.ids
        for link in parsed.links:
            target, fragment = urldefrag(urljoin(url, link))
            if not target.startswith(site):
                continue
            todo.append(target)
            if fragment and target.endswith(".html"):
                anchors.append((url, target, fragment))
    assert missing == []
    bad = [a for a in anchors if a[2] not in pages.get(a[1], ())]
    assert bad == []
    assert sum(u.endswith(".html") for u in pages) > 40  # the crawl found the site


def test_search_finds_check_vjp(browser, site):
    page, problems = _open(browser, site + "search.html?q=check_vjp", site)
    results = page.locator("#search-results ul.search li a")
    results.first.wait_for(timeout=15_000)
    hrefs = [a.get_attribute("href") for a in results.all()]
    assert any("api/check.html" in h for h in hrefs), hrefs
    page.screenshot(path=SCREENS / "search-check_vjp.png")
    assert problems == []
    page.close()
