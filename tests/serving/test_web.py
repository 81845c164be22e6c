"""The web page in headless Chromium (Playwright's Python package, Debian's chromium).

Skipped, with the reason, where /usr/bin/chromium or playwright is missing
(``bash scripts/test.sh`` installs both). The screenshot goes to
``test-artifacts/web.png`` at the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("MOODSHIFT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no `playwright install`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    ctx = browser.new_context(viewport={"width": 1360, "height": 940})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    outside: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith(live_server) else outside.append(r.url))
    pg.errors = errors  # type: ignore[attr-defined]
    pg.outside = outside  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def test_search_seed_choose_mood_results_and_audio(page, live_server, serve_catalog):
    seed_id = serve_catalog.labels["track_id"].iat[12]  # an even row: it has audio
    page.goto(live_server + "/", wait_until="networkidle")
    page.wait_for_selector("#mood-chips .chip")
    # Search the seed by id and pick it.
    page.fill("#search", seed_id)
    first = page.locator(f'#search-results li[data-track-id="{seed_id}"]')
    first.wait_for()
    first.click()
    page.wait_for_selector("#seed-card audio")
    # Its player loads the audio's metadata (range requests against /audio).
    page.wait_for_function(
        "() => { const a = document.querySelector('#seed-audio'); return a && a.readyState >= 1; }",
        timeout=15_000,
    )
    duration = page.evaluate("document.querySelector('#seed-audio').duration")
    assert duration == pytest.approx(0.25, abs=0.02)
    # Choose a target mood and a strength: results appear.
    page.locator('#mood-chips .chip[data-mood="happy"]').click()
    page.wait_for_selector("#results li.result")
    n = page.locator("#results li.result").count()
    assert n == 10
    ids = page.locator("#results li.result").evaluate_all("els => els.map(e => e.dataset.trackId)")
    assert seed_id not in ids and len(set(ids)) == 10
    assert "happy" in page.inner_text("#status")
    page.fill("#strength", "0.5")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('results')"
    )
    # Results carry players, labels and similarities; the map is drawn.
    assert page.locator("#results li.result .badge").count() == 10
    assert page.locator("#results li.result .sim").count() == 10
    assert page.locator("#results audio").count() >= 1
    painted = page.evaluate(
        """() => { const c = document.querySelector('#map');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                   return n; }"""
    )
    assert painted > 1000
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)
    assert not page.errors, page.errors
    assert not page.outside, f"the page fetched from elsewhere: {page.outside}"


def test_page_shows_api_errors(page, live_server):
    page.goto(live_server + "/", wait_until="networkidle")
    page.fill("#search", "no track has this text")
    page.wait_for_selector("#search-results li.empty")
    assert "no tracks match" in page.inner_text("#search-results")


def test_static_files_are_local(live_server):
    import httpx

    html = httpx.get(live_server + "/").text
    assert "/static/app.js" in html and "http://" not in html and "https://" not in html
    for name in ("app.js", "style.css"):
        r = httpx.get(f"{live_server}/static/{name}")
        assert r.status_code == 200
        assert "https://" not in r.text and "http://" not in r.text


def test_untagged_seed_journey_and_the_layout_at_1280px(browser, serve_catalog, serve_model):
    """An untagged seed's journey names its predicted mood; nothing runs past the page's edge."""
    import numpy as np
    from helpers import running

    from moodshift.serving.app import create_app

    lib = serve_catalog.subset(np.arange(len(serve_catalog)))
    labels = lib.labels.copy()
    labels.loc[labels.index[:40], "mood"] = ""  # untagged tracks, as a music folder has
    long_title = "An extremely long title of a live recording " * 6
    labels["title"] = [f"{long_title}{i}" if i % 3 == 0 else t
                       for i, t in enumerate(labels["title"])]  # fmt: skip
    lib.labels = labels
    seed_id = labels["track_id"].iat[0]
    with running(create_app(catalog=lib, model=serve_model, max_k=50)) as url:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.goto(url + "/", wait_until="networkidle")
        page.wait_for_selector("#mood-chips .chip")
        page.fill("#search", seed_id)
        item = page.locator(f'#search-results li[data-track-id="{seed_id}"]')
        item.wait_for()
        # The cut title can be read whole: a tooltip on the name.
        assert item.locator(".name").get_attribute("title").startswith(long_title.strip())
        item.click()
        page.locator('#mood-chips .chip[data-mood="happy"]').click()
        page.wait_for_selector("#results li.result")

        def overflow() -> dict:
            return page.evaluate(
                """() => {
                  const vw = document.documentElement.clientWidth;
                  const wide = [...document.querySelectorAll('main *')]
                    .filter((e) => e.getBoundingClientRect().right > vw + 0.5)
                    .map((e) => e.className || e.tagName);
                  return {page: document.documentElement.scrollWidth - vw, wide: wide};
                }"""
            )

        assert overflow() == {"page": 0, "wide": []}
        page.click("#journey")
        page.wait_for_selector("#results li.journey-item")
        page.wait_for_function(
            "() => /mood journey/.test(document.querySelector('#status').textContent)"
        )
        status = page.text_content("#status")
        assert "from ?" not in status
        p = serve_model.tagger.predict_proba(lib.embeddings[:1])[0]  # the untagged seed's guess
        mood = serve_model.tagger.classes[int(p.argmax())]
        assert f"from {mood} (predicted {round(100 * float(p.max()))}%) to happy" in status, status
        assert overflow() == {"page": 0, "wide": []}
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-1280.png"), full_page=True)
        ctx.close()


def test_teach_it_your_moods_and_the_untagged_seed_card(browser, serve_catalog, serve_model,
                                                        tmp_path):  # fmt: skip
    """The panel plays the tracks to label; a click saves a mood and the panel moves on.

    The seed card of an untagged seed shows the tagger's mood and probability, and the
    label given in the panel once it is labelled.
    """
    import math

    import httpx
    import numpy as np
    from helpers import running

    from moodshift.data.catalog import Catalog
    from moodshift.serving.app import create_app

    lib = serve_catalog.subset(np.arange(len(serve_catalog)))
    labels = lib.labels.copy()
    labels.loc[labels.index[:40], "mood"] = ""  # untagged tracks, as a music folder has
    lib.labels = labels
    lib.save(tmp_path / "lib")
    cat = Catalog.load(tmp_path / "lib", mmap=True)
    app = create_app(catalog=cat, model=serve_model, max_k=50, catalog_dir=tmp_path / "lib")
    with running(app) as url:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/", wait_until="networkidle")
        items = page.locator("#label-tracks li.label-item")
        items.first.wait_for()
        assert items.count() == 4
        shown = [items.nth(i).get_attribute("data-track-id") for i in range(4)]
        assert all(cat.index_of(t) < 40 for t in shown)  # only untagged tracks are asked
        # Each plays through /audio/{id} where it has a file, and shows the model's guess.
        with_audio = [t for t in shown if cat.index_of(t) % 2 == 0]
        for t in with_audio:
            src = page.locator(f'#label-tracks li[data-track-id="{t}"] audio').get_attribute("src")
            assert src == f"/audio/{t}"
        assert "predicted" in items.first.locator(".mood-source").text_content()

        # The first suggestion as the seed: untagged, so its card says the tagger's guess.
        seed_id = shown[0]
        guess = httpx.get(f"{url}/tracks/{seed_id}").json()
        assert guess["mood_source"] == "predicted"
        pct = math.floor(100 * guess["mood_probability"] + 0.5)
        page.fill("#search", seed_id)
        page.locator(f'#search-results li[data-track-id="{seed_id}"]').click()
        card = page.locator("#seed-mood")
        assert card.locator(".badge").text_content() == guess["mood"]
        assert f"predicted {pct}%" in card.text_content() and "?" not in card.text_content()
        page.locator('#mood-chips .chip[data-mood="happy"]').click()
        page.wait_for_selector("#results li.result")
        assert f"predicted {pct}%" in card.text_content()

        # Label it with a mood the tagger did not guess: saved, and the panel advances.
        mood = next(m for m in serve_model.classes if m != guess["mood"])
        items.first.locator(f'.label-mood[data-mood="{mood}"]').click()
        page.wait_for_function(
            """(id) => ![...document.querySelectorAll('#label-tracks li.label-item')]
                         .some((li) => li.dataset.trackId === id)
                       && document.querySelectorAll('#label-tracks li.label-item').length === 4""",
            arg=seed_id,
        )
        assert "saved" in page.text_content("#label-status")
        assert Catalog.load(tmp_path / "lib").labels["mood"].iat[cat.index_of(seed_id)] == mood
        # The query re-ran with the label: the seed card now shows it.
        page.wait_for_function(
            "() => /label/.test(document.querySelector('#seed-mood .mood-source').textContent)"
        )
        assert card.locator(".badge").text_content() == mood
        assert errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-label.png"), full_page=True)
        ctx.close()
