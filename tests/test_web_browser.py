"""The page in a real browser (headless chromium) on the demo catalog."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the web extra (aiohttp) is not installed")

from support.browser import chromium, served, wait_until
from support.webkit import big_file_legacy, demo_legacy, migrated_demo

from modelvault.database import DatabaseManager
from modelvault.migration.manager import MigrationManager
from modelvault.web import build_app

# A checkpoint's size: its hashing lasts long enough to be paused and resumed from the page.
BIG_FILE = 32 * 1024**3
ALL_DECODED = (
    "const images = [...document.querySelectorAll('#grid img')];"
    "images.forEach((i) => i.scrollIntoView());"
    "return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);"
)


@pytest.fixture
def demo_db(tmp_path: Path) -> Iterator[DatabaseManager]:
    with migrated_demo(tmp_path) as db:
        yield db


def by_id(driver: Any, name: str) -> Any:
    return driver.find_element("id", name)


def cards(driver: Any) -> list[Any]:
    return list(driver.find_elements("css selector", "#grid .card"))


def test_the_grid_filters_by_tag_and_a_note_is_kept(
    demo_db: DatabaseManager, tmp_path: Path
) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    total = len(demo_db.find_models())
    favourites = demo_db.find_models(tags=["favourite"])
    assert 0 < len(favourites) < total
    with served(build_app(demo_db)) as address, chromium() as driver:
        driver.get(address)
        wait_until(driver, lambda d: len(cards(d)) == total, "every model in the grid")
        wait_until(driver, lambda d: d.execute_script(ALL_DECODED), "every preview decoded")
        driver.save_screenshot(str(tmp_path / "grid-1280.png"))

        Select(by_id(driver, "tag")).select_by_value("favourite")
        wait_until(driver, lambda d: len(cards(d)) == len(favourites), "the favourites only")
        assert "tag=favourite" in driver.current_url
        chips = driver.find_elements("css selector", "#grid .tag")
        colours = {c.value_of_css_property("background-color") for c in chips}
        assert "rgba(255, 136, 0, 1)" in colours  # favourite's own colour

        driver.get(driver.current_url)  # the filter lives in the address
        wait_until(driver, lambda d: len(cards(d)) == len(favourites), "the filter kept")

        chosen = cards(driver)[0]
        sha = chosen.get_attribute("data-sha256")
        chosen.send_keys(Keys.ENTER)  # the keyboard opens it
        wait_until(driver, lambda d: by_id(d, "detail-panel").is_displayed(), "the detail panel")
        assert sha in by_id(driver, "d-fields").text
        note = by_id(driver, "d-note")
        note.clear()
        note.send_keys("keeps its colours")
        by_id(driver, "d-save").click()
        wait_until(driver, lambda d: by_id(d, "message").text == "note saved", "the note saved")
        record = demo_db.get_model(sha)
        assert record is not None
        assert record.meta["description"] == "keeps its colours"
        driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        wait_until(driver, lambda d: not by_id(d, "detail-panel").is_displayed(), "closed")

    with served(build_app(demo_db)) as address, chromium(400, 860) as narrow:
        narrow.get(address)
        wait_until(narrow, lambda d: len(cards(d)) == total, "every model at 400 px")
        width = narrow.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400  # nothing runs off the side
        narrow.save_screenshot(str(tmp_path / "grid-400.png"))
    assert (tmp_path / "grid-1280.png").stat().st_size > 0
    assert (tmp_path / "grid-400.png").stat().st_size > 0


def test_a_migration_started_on_the_page_moves_the_bar(tmp_path: Path) -> None:
    db, legacy = demo_legacy(tmp_path)
    manager = MigrationManager.for_database(db)
    try:
        with served(build_app(db)) as address, chromium() as driver:
            driver.get(address)
            wait_until(driver, lambda d: by_id(d, "state").text == "idle", "the status")
            # Held by a pause given before it starts, so the page sees it waiting.
            post(address + "api/run/pause")
            by_id(driver, "legacy").send_keys(str(legacy))
            by_id(driver, "migrate").click()
            wait_until(driver, lambda d: by_id(d, "state").text.startswith("paused"), "paused")
            assert float(by_id(driver, "progress").get_attribute("value")) < 1
            resume = by_id(driver, "resume")
            assert resume.is_enabled()
            resume.click()
            wait_until(driver, lambda d: by_id(d, "state").text == "done", "the run done")
            assert float(by_id(driver, "progress").get_attribute("value")) == 1
            wait_until(driver, lambda d: len(cards(d)) == len(db.find_models()) > 0, "the grid")
            assert not by_id(driver, "pause").is_enabled()
            driver.save_screenshot(str(tmp_path / "done-1280.png"))
    finally:
        manager.close(30)
        db.dispose()


def state(driver: Any) -> str:
    return str(by_id(driver, "state").text)


def progress(driver: Any) -> float:
    value = by_id(driver, "progress").get_attribute("value")
    return float(value) if value else 0.0


def test_the_pages_pause_and_resume_hold_a_file_in_the_middle(tmp_path: Path) -> None:
    db, legacy = big_file_legacy(tmp_path, BIG_FILE)
    manager = MigrationManager.for_database(db)
    try:
        with served(build_app(db)) as address, chromium() as driver:
            driver.get(address)
            wait_until(driver, lambda d: state(d) == "idle", "the status")
            by_id(driver, "legacy").send_keys(str(legacy))
            by_id(driver, "migrate").click()
            wait_until(driver, lambda d: state(d) == "processing" and progress(d) > 0, "hashing")
            by_id(driver, "pause").click()
            wait_until(driver, lambda d: state(d) == "paused (processing)", "paused")
            held = manager.status()
            assert 0 < held.bytes_done < BIG_FILE  # paused in the middle of the file
            assert by_id(driver, "resume").is_enabled()
            assert not by_id(driver, "pause").is_enabled()
            driver.save_screenshot(str(tmp_path / "paused-1280.png"))

            by_id(driver, "resume").click()
            moved = progress(driver)
            wait_until(driver, lambda d: state(d) == "processing", "hashing again")
            wait_until(driver, lambda d: progress(d) > moved, "the bar moving on")
            assert manager.status().bytes_done > held.bytes_done
            by_id(driver, "stop").click()
            wait_until(driver, lambda d: state(d) == "stopped", "stopped")
            driver.save_screenshot(str(tmp_path / "stopped-1280.png"))
        assert db.find_models() == []  # stopped before the end: the file is still staged
        (staged,) = db.get_pending_imports()
        assert staged.status == "pending"
    finally:
        manager.close(30)
        db.dispose()
    assert (tmp_path / "paused-1280.png").stat().st_size > 0


def post(address: str) -> Any:
    request = urllib.request.Request(
        address, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
