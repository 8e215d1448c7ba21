"""Each REST provider against a fake API answering in its documented shape; ddgs replaced at
its Python interface."""

from __future__ import annotations

import pytest

from clearclass import acquire
from clearclass.acquire.http import HttpClient
from clearclass.acquire.providers import (
    PROVIDERS,
    DuckDuckGo,
    Flickr,
    Pexels,
    Pixabay,
    SerpApi,
    Unsplash,
    get_provider,
)
from clearclass.errors import AcquireError, CredentialsError
from tests.acquire.conftest import Reply

KEY = "provider-test-key-0001"


def _provider(cls, web, **extra):
    environ = {cls.url_variable(): web.url, **extra}
    if cls.key_variable:
        environ[cls.key_variable] = KEY
    return cls.from_environment(HttpClient(timeout=2, retries=0), environ)


def _pages(items, per_page):
    return [items[i : i + per_page] for i in range(0, len(items), per_page)]


def test_the_package_lists_every_provider():
    assert tuple(PROVIDERS) == acquire.PROVIDERS


@pytest.mark.parametrize("cls", [Pexels, Unsplash, Pixabay, Flickr, SerpApi])
def test_a_missing_key_names_the_variable_and_where_to_get_one(cls):
    with pytest.raises(CredentialsError) as error:
        cls.from_environment(HttpClient(), {})
    message = str(error.value)
    assert cls.key_variable in message and "http" in message and "duckduckgo" in message


def test_unknown_provider_lists_the_choices():
    with pytest.raises(AcquireError, match="choose one of duckduckgo, pexels"):
        get_provider("bing", HttpClient(), {})


def test_a_base_url_must_be_http():
    with pytest.raises(AcquireError, match="CLEARCLASS_PEXELS_URL must be an http"):
        Pexels.from_environment(HttpClient(), {"PEXELS_API_KEY": KEY,
                                               "CLEARCLASS_PEXELS_URL": "ftp://x"})


def test_pexels_pages_until_next_page_is_absent(web):
    photos = [{"id": i, "width": 800, "height": 600, "url": f"https://www.pexels.com/photo/{i}/",
               "photographer": f"Ann {i}", "src": {"original": f"{web.url}/o{i}.jpg",
                                                   "large": f"{web.url}/l{i}.jpg",
                                                   "medium": f"{web.url}/m{i}.jpg"}}
              for i in range(5)]
    pages = _pages(photos, 2)

    def answer(request):
        if request.headers.get("authorization") != KEY:
            return 401, {"error": "Unauthorized"}
        n = int(request.query["page"])
        body = {"page": n, "per_page": 2, "total_results": 5, "photos": pages[n - 1]}
        if n < len(pages):
            body["next_page"] = f"{web.url}/v1/search?page={n + 1}"
        return 200, body

    web.json("/v1/search", answer)
    found = list(_provider(Pexels, web).candidates("beagle"))
    assert [c.photo_id for c in found] == ["0", "1", "2", "3", "4"]
    assert found[0].image_url == f"{web.url}/l0.jpg"  # large when there is no large2x
    assert (found[0].author, found[0].page_url, found[0].licence, found[0].provider) == \
        ("Ann 0", "https://www.pexels.com/photo/0/", "Pexels License", "pexels")
    assert [s.query["page"] for s in web.hits("/v1/search")] == ["1", "2", "3"]
    assert web.hits("/v1/search")[0].query["query"] == "beagle"


def test_a_refused_key_is_a_credentials_error(web):
    web.json("/v1/search", lambda request: (401, {"error": "Unauthorized"}))
    with pytest.raises(CredentialsError, match="Pexels refused the API key in PEXELS_API_KEY"):
        list(_provider(Pexels, web).candidates("pug"))


def test_unsplash_pages_and_pings_download_location_on_its_own_host_only(web):
    def photo(i, ping):
        return {"id": f"u{i}", "width": 900, "height": 600,
                "urls": {"raw": f"{web.url}/raw{i}", "regular": f"{web.url}/reg{i}.jpg"},
                "links": {"html": f"https://unsplash.com/photos/u{i}",
                          "download_location": ping},
                "user": {"name": f"Bo {i}", "username": f"bo{i}"}}

    pages = [[photo(0, f"{web.url}/photos/u0/download?ixid=x"),
              photo(1, "https://elsewhere.example/steal")], [photo(2, "")]]

    def answer(request):
        assert request.headers["authorization"] == f"Client-ID {KEY}"
        assert request.headers["accept-version"] == "v1"
        n = int(request.query["page"])
        return 200, {"total": 3, "total_pages": 2, "results": pages[n - 1]}

    web.json("/search/photos", answer)
    web.json("/photos/u0/download", lambda request: (200, {"url": "x"}))
    provider = _provider(Unsplash, web)
    found = list(provider.candidates("pug"))
    assert [c.photo_id for c in found] == ["u0", "u1", "u2"]
    assert found[0].image_url == f"{web.url}/reg0.jpg"
    assert (found[0].author, found[0].licence) == ("Bo 0", "Unsplash License")
    for candidate in found:
        provider.used(candidate)
    pings = web.hits("/photos/u0/download")
    assert len(pings) == 1 and pings[0].query["ixid"] == "x"
    assert pings[0].headers["authorization"] == f"Client-ID {KEY}"
    assert len(web.seen) == 3  # two pages and one ping: nothing sent elsewhere


def test_unsplash_rate_limit_403_says_so(web):
    web.sequence("/search/photos", Reply(403, b"Rate Limit Exceeded"))
    with pytest.raises(AcquireError, match="rate limit is used up") as error:
        list(_provider(Unsplash, web).candidates("pug"))
    assert not isinstance(error.value, CredentialsError)


def test_pixabay_sends_the_key_as_a_parameter_and_stops_at_total_hits(web):
    hits = [{"id": i, "pageURL": f"https://pixabay.com/photos/{i}/", "type": "photo",
             "largeImageURL": f"{web.url}/p{i}_1280.jpg", "webformatURL": f"{web.url}/w{i}.jpg",
             "user": f"user{i}", "user_id": i} for i in range(3)]

    def answer(request):
        assert request.query["key"] == KEY and request.query["image_type"] == "photo"
        return 200, {"total": 3, "totalHits": 3, "hits": hits}

    web.json("/api/", answer)
    found = list(_provider(Pixabay, web).candidates("golden retriever"))
    assert [c.image_url for c in found] == [f"{web.url}/p{i}_1280.jpg" for i in range(3)]
    assert found[1].licence == "Pixabay Content License" and found[1].author == "user1"
    assert len(web.hits("/api/")) == 1


def test_pixabay_out_of_range_page_ends_the_results_and_a_bad_key_is_named(web):
    def answer(request):
        if request.query["page"] == "1":
            return 200, {"total": 900, "totalHits": 500, "hits": [
                {"id": 1, "pageURL": "p", "largeImageURL": f"{web.url}/1.jpg", "user": "u"}]}
        return 400, '[ERROR 400] "page" is out of valid range.'

    web.json("/api/", answer)
    assert len(list(_provider(Pixabay, web).candidates("cat"))) == 1

    web.json("/api/", lambda request: (400, "[ERROR 400] Invalid or missing API key"))
    with pytest.raises(CredentialsError, match="PIXABAY_API_KEY"):
        list(_provider(Pixabay, web).candidates("cat"))


def test_flickr_builds_urls_pages_and_licences(web):
    photos = [
        {"id": "11", "owner": "o@N01", "secret": "s1", "server": "65535", "title": "a",
         "license": "4", "ownername": "Cy", "url_l": f"{web.url}/11_l.jpg"},
        {"id": "12", "owner": "o@N02", "secret": "s2", "server": "7", "title": "b",
         "license": "9", "ownername": ""},
    ]

    def answer(request):
        q = request.query
        assert q["api_key"] == KEY and q["nojsoncallback"] == "1" and q["format"] == "json"
        assert q["license"] == Flickr.licences and q["sort"] == "relevance"
        return 200, {"photos": {"page": int(q["page"]), "pages": 1, "perpage": 100,
                                "total": "2", "photo": photos}, "stat": "ok"}

    web.json("/services/rest/", answer)
    found = list(_provider(Flickr, web).candidates("pug"))
    assert found[0].image_url == f"{web.url}/11_l.jpg"
    assert found[1].image_url == "https://live.staticflickr.com/7/12_s2_b.jpg"
    assert found[0].page_url == "https://www.flickr.com/photos/o@N01/11"
    assert (found[0].licence, found[1].licence) == ("CC BY 2.0", "CC0 1.0")
    assert (found[0].author, found[1].author) == ("Cy", "o@N02")


def test_flickr_invalid_key_is_a_credentials_error(web):
    web.json("/services/rest/", lambda request: (
        200, {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}))
    with pytest.raises(CredentialsError, match="Flickr refused the API key in FLICKR_API_KEY"):
        list(_provider(Flickr, web).candidates("pug"))


def test_serpapi_pages_with_ijn_until_google_has_no_more(web):
    def answer(request):
        q = request.query
        assert q["engine"] == "google_images" and q["api_key"] == KEY
        if q["ijn"] == "0":
            return 200, {"search_metadata": {"status": "Success"}, "images_results": [
                {"position": 1, "original": f"{web.url}/g1.jpg", "link": "https://dogs.example/1",
                 "source": "dogs.example", "title": "a pug"}]}
        return 200, {"search_metadata": {"status": "Success"},
                     "error": "Google hasn't returned any results for this query."}

    web.json("/search.json", answer)
    found = list(_provider(SerpApi, web).candidates("pug"))
    assert [(c.image_url, c.page_url, c.licence) for c in found] == \
        [(f"{web.url}/g1.jpg", "https://dogs.example/1", "")]
    assert [s.query["ijn"] for s in web.hits("/search.json")] == ["0", "1"]


def test_serpapi_out_of_searches_is_a_rate_limit(web):
    web.json("/search.json", lambda request: (429, {"error": "Your account has run out of "
                                                             "searches."}))
    client = HttpClient(timeout=2, retries=0)
    provider = SerpApi.from_environment(client, {"SERPAPI_API_KEY": KEY,
                                                 "CLEARCLASS_SERPAPI_URL": web.url})
    with pytest.raises(AcquireError, match="rate limit is used up.*run out of searches"):
        list(provider.candidates("pug"))


def test_duckduckgo_goes_through_ddgs(monkeypatch):
    calls = []

    def images(self, query, **kwargs):
        calls.append((query, kwargs))
        if kwargs["page"] == 1:
            return [{"title": "a", "image": "https://a.example/1.jpg", "thumbnail": "t",
                     "url": "https://a.example/page1", "height": 10, "width": 10, "source": "x"},
                    {"title": "b", "image": "https://a.example/2.jpg", "thumbnail": "t",
                     "url": "https://a.example/page2", "height": "10", "width": "10",
                     "source": "Bing"}]
        from ddgs.exceptions import DDGSException
        raise DDGSException("No results found.")

    monkeypatch.setattr("ddgs.ddgs.DDGS.images", images)
    provider = DuckDuckGo.from_environment(HttpClient(), {})
    found = list(provider.candidates("shiba inu"))
    assert [c.image_url for c in found] == ["https://a.example/1.jpg", "https://a.example/2.jpg"]
    assert found[0].page_url == "https://a.example/page1" and found[0].provider == "duckduckgo"
    assert [c[1]["page"] for c in calls] == [1, 2]
    assert calls[0][0] == "shiba inu" and calls[0][1]["max_results"] == 100


def test_duckduckgo_refusal_says_what_to_do(monkeypatch):
    from ddgs.exceptions import DDGSException, TimeoutException

    def refused(self, query, **kwargs):
        raise DDGSException("https://duckduckgo.com/i.js 403 Ratelimit")

    monkeypatch.setattr("ddgs.ddgs.DDGS.images", refused)
    with pytest.raises(AcquireError, match="wait a few minutes, or use another --provider"):
        list(DuckDuckGo.from_environment(HttpClient(), {}).candidates("pug"))

    def slow(self, query, **kwargs):
        raise TimeoutException("timed out")

    monkeypatch.setattr("ddgs.ddgs.DDGS.images", slow)
    with pytest.raises(AcquireError, match="did not answer"):
        list(DuckDuckGo.from_environment(HttpClient(), {}).candidates("pug"))


def test_a_page_that_repeats_earlier_results_ends_the_paging(web):
    photo = {"id": 1, "url": "u", "photographer": "p", "src": {"large": f"{web.url}/1.jpg"}}
    web.json("/v1/search", lambda request: (200, {"photos": [photo], "next_page": "more"}))
    assert len(list(_provider(Pexels, web).candidates("pug"))) == 1
    assert len(web.hits("/v1/search")) == 2


def test_pexels_follows_next_page_parameters_on_its_own_base_url(web):
    def photo(i):
        return {"id": i, "url": f"https://www.pexels.com/photo/{i}/", "photographer": "p",
                "src": {"large": f"{web.url}/{i}.jpg"}}

    def answer(request):
        if request.query.get("cursor") == "abc":
            return 200, {"photos": [photo(2)]}
        # next_page names the real API host: only its parameters are followed.
        return 200, {"photos": [photo(1)],
                     "next_page": "https://api.pexels.com/v1/search/?cursor=abc&query=dog"}

    web.json("/v1/search", answer)
    assert [c.photo_id for c in _provider(Pexels, web).candidates("dog")] == ["1", "2"]
    assert [s.query.get("cursor") for s in web.hits("/v1/search")] == [None, "abc"]
