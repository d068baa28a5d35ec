"""The demo project's commands: load the shipped sample, show neighbours."""

import io
import re
from html import unescape

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from demo_project.packages.models import Package
from vectorindex import CosineDistance


def run(*args, **options):
    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_load_sample_then_neighbours():
    output = run("load_sample", "--no-progress", "--limit", "2000")
    assert Package.objects.count() == 2000
    assert "2,000" in output
    # Loading again does nothing unless asked to replace.
    assert "already" in run("load_sample", "--no-progress", "--limit", "2000")
    assert Package.objects.count() == 2000

    package = Package.objects.order_by("pk")[7]
    output = run("neighbours", package.name, "-k", "3")
    assert package.name in output

    # The three names printed are the exact nearest by cosine distance.
    others = Package.objects.exclude(pk=package.pk)
    matrix = np.stack([p.embedding for p in others]).astype(np.float64)
    query = package.embedding.astype(np.float64)
    cosine = 1 - matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    names = [p.name for p in others]
    expected = [names[i] for i in np.argsort(cosine, kind="stable")[:3]]
    listed = [line.split()[2] for line in output.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert listed == expected
    annotated = others.annotate(d=CosineDistance("embedding", package.embedding)).order_by("d")[:3]
    assert [p.name for p in annotated] == expected


@pytest.mark.django_db
def test_neighbours_of_an_unknown_name_suggests_others():
    run("load_sample", "--no-progress", "--limit", "500")
    name = Package.objects.filter(name__regex=r"^[a-z]{5,}").order_by("pk").first().name
    with pytest.raises(CommandError, match="and no package name contains it"):
        run("neighbours", "\u2603" + name)
    with pytest.raises(CommandError) as caught:
        run("neighbours", name[1:])
    assert str(caught.value).startswith(f"No package named {name[1:]!r}. Did you mean: ")
    assert name in str(caught.value)


# The demo site: the search page the admin's "View site" opens ----------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("built", [False, True])
def test_the_search_page_shows_a_packages_nearest_packages(client, settings, built):
    from django.contrib.auth.models import User

    from tests.indexing import build

    settings.ROOT_URLCONF = "demo_project.urls"
    run("load_sample", "--no-progress", "--limit", "1500")
    if built:
        build("package_embedding")
    package = Package.objects.order_by("pk")[11]
    html = client.get("/", {"q": package.name}).content.decode()
    exact = list(
        Package.objects.exclude(pk=package.pk)
        .annotate(d=CosineDistance("embedding", package.embedding))
        .exact()
        .order_by("d")
        .values_list("name", flat=True)[:10]
    )
    listed = [unescape(name) for name in re.findall(r'<td><a href="\?q=[^"]*">([^<]+)</a></td>', html)]
    assert len(listed) == 10
    if built:
        assert "answered by the index in" in html
        assert len(set(listed) & set(exact)) >= 8  # approximate
    else:
        assert "answered by the exact scan in" in html
        assert listed == exact
    # A name that is no package's: names that contain it.
    html = client.get("/", {"q": package.name[1:]}).content.decode()
    assert f"No package is named “{package.name[1:]}”" in unescape(html) and package.name in unescape(html)
    # The search box's suggestions, and the admin's "View site" link to this page.
    names = client.get("/suggest", {"q": package.name[:3]}).json()["names"]
    assert 0 < len(names) <= 8 and all(package.name[:3].lower() in name.lower() for name in names)
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    assert 'href="/">View site</a>' in client.get("/admin/").content.decode()
    assert client.get("/").status_code == 200
