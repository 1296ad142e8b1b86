"""Open every page of a built site in headless Chromium: no console errors, no failed requests,
every image loads, the search answers; screenshots of the home and benchmarks pages.

    python docs/_tests/check_site.py SITE_DIR --chromium /usr/bin/chromium --out docs-check-out
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

# Without the background-networking flags Chromium calls out to Google's hosts at start.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # fmt: skip
SEARCH_QUERY = "moe_align_block_size"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def page_urls(site: Path, base: str) -> list[str]:
    urls = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        if relative.startswith(("assets", "search")):
            continue
        urls.append(base + ("" if relative == "." else relative + "/"))
    return urls


def check(site: Path, chromium: str, out: Path) -> list[str]:
    server, base = serve(site)
    problems: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    urls = page_urls(site, base)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            current = {"url": ""}
            page.on("console", lambda m: problems.append(f"{current['url']}: console {m.type}: "
                                                         f"{m.text}") if m.type == "error" else None)  # fmt: skip
            page.on("pageerror", lambda e: problems.append(f"{current['url']}: page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(
                f"{current['url']}: request failed: {r.url} ({r.failure})"))  # fmt: skip
            for url in urls:
                current["url"] = url
                response = page.goto(url, wait_until="networkidle")
                if response is None or response.status != 200:
                    problems.append(f"{url}: HTTP {response.status if response else 'no answer'}")
                broken = page.evaluate("[...document.images].filter(i => !i.complete || "
                                       "i.naturalWidth === 0).map(i => i.src)")  # fmt: skip
                problems += [f"{url}: image does not load: {src}" for src in broken]
                name = url[len(base) :].strip("/") or "home"
                if name in ("home", "benchmarks"):
                    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            current["url"] = base + " (search)"
            page.goto(base, wait_until="networkidle")
            page.wait_for_function("() => window.document$ !== undefined", timeout=10000)
            page.keyboard.press("/")  # the theme's shortcut: focus the search box
            page.keyboard.type(SEARCH_QUERY, delay=20)
            try:
                page.wait_for_selector(".md-search-result__item", timeout=10000)
                hits = page.locator(".md-search-result__item").count()
                page.screenshot(path=str(out / "search.png"))
                print(f"search for {SEARCH_QUERY!r}: {hits} results")
            except Exception as error:  # playwright's TimeoutError
                problems.append(f"search for {SEARCH_QUERY!r} showed no results ({error})")
            browser.close()
    finally:
        server.shutdown()
    print(f"checked {len(urls)} pages; screenshots in {out}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path("docs-check-out"))
    args = parser.parse_args()
    problems = check(args.site, args.chromium, args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
