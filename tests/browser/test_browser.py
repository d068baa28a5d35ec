"""The admin and the demo site in a real browser: Chromium, driven by Selenium through ChromeDriver.

Run on SQLite by the suite wherever ``chromium`` and ``chromedriver`` are
installed (``.ci/run`` installs them); skipped, saying why, where they are
not. With ``VECTORINDEX_SCREENSHOTS=docs/screenshots`` the pages the README
shows are saved there as PNG.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection

from tests.indexing import build, clustered

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOTS = os.environ.get("VECTORINDEX_SCREENSHOTS")

pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromedriver here (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the browser tests run on SQLite; MariaDB has the same pages' server-side tests"),
]

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # selenium is in requirements.txt; without it, say so
    pytestmark.append(pytest.mark.skip(reason="selenium is not installed (pip install -r requirements.txt)"))


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def shoot(browser, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def log_in(browser, live_server, username: str, password: str = "pw") -> None:
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{live_server.url}/admin/"))


@pytest.fixture
def points(transactional_db):
    from tests.testapp.models import Point

    Point.objects.bulk_create(Point(group=i % 3, embedding=v) for i, v in enumerate(clustered(300)))
    build("point_embedding")
    User.objects.create_superuser("admin", "a@example.com", "pw")
    return list(Point.objects.order_by("pk"))


def test_a_row_shows_its_nearest_rows_and_the_list_orders_by_similarity(browser, live_server, points):
    log_in(browser, live_server, "admin")
    point = points[4]
    browser.get(f"{live_server.url}/admin/testapp/point/{point.pk}/change/")
    panel = browser.find_element(By.CSS_SELECTOR, "fieldset.vectorindex-neighbours")
    assert "Nearest rows by embedding (L2Distance)" in panel.text
    assert "Answered by the index in" in panel.text
    links = panel.find_elements(By.CSS_SELECTOR, "tbody a")
    assert len(links) == 10
    shoot(browser, "admin-nearest-rows")
    first = links[0].text
    links[0].click()  # a neighbour's own page, with its own neighbours
    WebDriverWait(browser, 10).until(expected_conditions.title_contains(first))
    assert browser.find_element(By.CSS_SELECTOR, "fieldset.vectorindex-neighbours")

    # The changelist's action: every row by its distance to the one selected (one on the first page).
    point = points[-3]
    browser.get(f"{live_server.url}/admin/testapp/point/")
    browser.find_element(By.CSS_SELECTOR, f"input.action-select[value='{point.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("list_similar")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains(f"similar_to={point.pk}"))
    headers = [th.text.lower() for th in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")]
    assert "distance" in headers
    first_row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert f"/admin/testapp/point/{point.pk}/change/" in first_row.find_element(By.CSS_SELECTOR, "a").get_attribute("href")
    shoot(browser, "admin-list-by-similarity")


def test_the_index_page_its_chart_and_each_action(browser, live_server, points):
    from vectorindex.models import IndexState

    log_in(browser, live_server, "admin")
    state = IndexState.objects.get(name="point_embedding")
    browser.get(f"{live_server.url}/admin/vectorindex/indexstate/{state.pk}/change/")
    table = browser.find_element(By.CSS_SELECTOR, "table.vectorindex-health")
    assert "vectors" in table.text and "head index in memory" in table.text
    chart = browser.find_element(By.CSS_SELECTOR, "svg.vectorindex-chart")
    assert chart.find_elements(By.CSS_SELECTOR, "rect")
    assert not browser.find_elements(By.NAME, "_save")
    shoot(browser, "admin-index-health")
    for action, said in [
        ("check_invariants", "“point_embedding”: ok"),
        ("take_snapshot", "“point_embedding”: snapshot at LSN"),
        ("maintain_indexes", "“point_embedding”: "),
        ("recover_indexes", "“point_embedding”: head index loaded from the snapshot"),
        ("build_indexes", "“point_embedding”: point_embedding: 300 vectors"),
    ]:
        browser.get(f"{live_server.url}/admin/vectorindex/indexstate/")
        browser.find_element(By.CSS_SELECTOR, f"input.action-select[value='{state.pk}']").click()
        Select(browser.find_element(By.NAME, "action")).select_by_value(action)
        browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
        messages = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
        assert said in messages, (action, messages)


def test_a_view_only_user_and_an_anonymous_visitor(browser, live_server, points):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_indexstate", "view_point"])
    )
    log_in(browser, live_server, "viewer")
    browser.get(f"{live_server.url}/admin/vectorindex/indexstate/")
    assert "point_embedding" in browser.page_source
    assert not browser.find_elements(By.NAME, "action")  # no action is offered
    browser.get(f"{live_server.url}/admin/testapp/point/{points[0].pk}/change/")
    assert len(browser.find_elements(By.CSS_SELECTOR, "fieldset.vectorindex-neighbours tbody tr")) == 10
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/vectorindex/indexstate/")
    assert "/admin/login/" in browser.current_url


def test_the_demo_page_suggests_names_and_shows_the_nearest_packages(browser, live_server, transactional_db, settings):
    from django.core.management import call_command

    from demo_project.packages.models import Package

    settings.ROOT_URLCONF = "demo_project.urls"
    call_command("load_sample", "--no-progress", "--limit", "1500", stdout=open(os.devnull, "w"))
    build("package_embedding")
    package = Package.objects.filter(name__regex=r"^[a-z]{6,}$").order_by("pk").first()
    browser.get(f"{live_server.url}/")
    box = browser.find_element(By.NAME, "q")
    box.send_keys(package.name[:4])
    WebDriverWait(browser, 10).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#names option"))
    suggested = [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#names option")]
    assert suggested and all(package.name[:4] in name.lower() for name in suggested)
    box.clear()
    box.send_keys(package.name)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.ID, "answer")))
    assert browser.find_element(By.TAG_NAME, "h2").text == package.name
    assert "answered by the index in" in browser.find_element(By.ID, "answer").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "tbody tr")) == 10
    shoot(browser, "demo-search")
