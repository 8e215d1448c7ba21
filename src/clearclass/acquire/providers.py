"""Image search providers: each turns a query into candidate photos, page after page.

A provider is a small class: where its API lives, which environment variable holds its
key, and how one page of results becomes `SearchHit`s (image URL, page URL, author,
licence, the provider's photo id). `Provider.candidates(query)` pages until the results
run out. DuckDuckGo goes through the `ddgs` package; the others through their REST APIs,
whose base URL `CLEARCLASS_<PROVIDER>_URL` replaces (for tests and proxies).

Keys are sent only to the provider's own API (in a header where the API allows it), are
registered with `http.redact`, and never appear in a message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from clearclass.acquire import http
from clearclass.acquire.http import FetchError, HttpClient
from clearclass.errors import AcquireError, CredentialsError
from clearclass.progress import warn


@dataclass(frozen=True)
class SearchHit:
    """A photo a provider offers for a query; author and licence are "" when not given."""

    image_url: str
    page_url: str = ""
    author: str = ""
    licence: str = ""
    photo_id: str = ""
    provider: str = ""
    # Unsplash's guidelines ask API clients to call this URL when a photo is used.
    download_ping: str = ""


class Provider:
    """One image search service. Subclasses set the class attributes and `page`.

    For example, `for c in Pexels.from_environment(client).candidates("beagle"): ...` goes
    through Pexels' results for "beagle" page after page (it needs the internet and a key).
    """

    name: ClassVar[str]  # as given to --provider
    title: ClassVar[str]  # as shown to people
    key_variable: ClassVar[str | None] = None
    key_help: ClassVar[str] = ""  # where to get a key
    default_url: ClassVar[str] = ""
    licence: ClassVar[str] = ""  # the licence of every photo, "" when the service gives none
    limits: ClassVar[str] = ""  # its published rate limit, for the message when it is hit
    first_page: ClassVar[int] = 1

    def __init__(self, client: HttpClient, key: str = "", base_url: str = ""):
        self.client = client
        self.key = key
        self.base_url = (base_url or self.default_url).rstrip("/")
        http.register_secret(key)

    @classmethod
    def url_variable(cls) -> str:
        return f"CLEARCLASS_{cls.name.upper()}_URL"

    @classmethod
    def from_environment(cls, client: HttpClient,
                         environ: Mapping[str, str] | None = None) -> Provider:
        """The provider with its key and base URL from the environment.

        A missing key is a `CredentialsError` that names the variable and where to get a key.
        """
        environ = os.environ if environ is None else environ
        key = ""
        if cls.key_variable:
            key = environ.get(cls.key_variable, "").strip()
            if not key:
                raise CredentialsError(
                    f"Searching {cls.title} needs an API key in the environment variable "
                    f"{cls.key_variable}, which is not set. Get one at {cls.key_help}, then "
                    f"run: export {cls.key_variable}=<your key>. (--provider duckduckgo "
                    "needs no key.)")
        base_url = environ.get(cls.url_variable(), "").strip() if cls.default_url else ""
        if base_url and urlsplit(base_url).scheme not in ("http", "https"):
            raise AcquireError(f"{cls.url_variable()} must be an http(s) URL such as "
                               f"{cls.default_url}; got {base_url!r}.")
        return cls(client, key, base_url)

    def candidates(self, query: str) -> Iterator[SearchHit]:
        """Every candidate for `query`, page after page, until the results run out.

        A page that brings no photo not already offered also ends it: some services repeat
        their last page past the end (Flickr after 4,000 results).
        """
        offered: set[str] = set()
        cursor: Any = self.first_page
        while cursor is not None:
            photos, cursor = self.page(query, cursor)
            new = [c for c in photos if c.image_url and c.image_url not in offered]
            offered.update(c.image_url for c in new)
            yield from new
            if not new:
                return

    def page(self, query: str, cursor: Any) -> tuple[list[SearchHit], Any]:
        """One page of results, and the cursor of the next page (None after the last).

        The cursor is the page number (from `first_page`), or what the service's answer
        says to ask for next.
        """
        raise NotImplementedError

    def used(self, candidate: SearchHit) -> None:
        """Tell the service a photo was kept, where its terms ask for it."""

    def _get_json(self, path: str, params: dict[str, Any],
                  headers: dict[str, str] | None = None) -> dict | None:
        """A JSON object from the API, None when it says the results ended; refusals become
        errors that say what to do."""
        try:
            body = self.client.get_json(self.base_url + path, params=params, headers=headers)
        except FetchError as e:
            if self._says_no_more(e):
                return None
            raise self._refusal(e) from None
        if not isinstance(body, dict):
            raise AcquireError(f"{self.title} answered with an unexpected JSON value (not an "
                               f"object) from {self.base_url}{path}.")
        return body

    def _says_no_more(self, error: FetchError) -> bool:
        """Whether an error answer only means that there are no more results."""
        return False

    def _refusal(self, error: FetchError) -> AcquireError:
        if error.status in (401, 403) and self.key_variable:
            # Unsplash says "Rate Limit Exceeded" with a 403.
            if "rate limit" in error.detail.lower():
                return self._rate_limited(error)
            return CredentialsError(
                f"{self.title} refused the API key in {self.key_variable} ({error}). Check "
                f"the key at {self.key_help}.")
        if error.status == 429:
            return self._rate_limited(error)
        return AcquireError(f"{self.title} search failed: {error}")

    def _rate_limited(self, error: FetchError) -> AcquireError:
        return AcquireError(f"{self.title}'s rate limit is used up ({self.limits}). "
                            f"{str(error).rstrip('.')}. "
                            "Try again later; the photos already saved are kept.")


class Pexels(Provider):
    """Pexels: GET /v1/search, the key in the Authorization header, 80 photos a page."""

    name, title = "pexels", "Pexels"
    key_variable = "PEXELS_API_KEY"
    key_help = "https://www.pexels.com/api/ (free)"
    default_url = "https://api.pexels.com"
    licence = "Pexels License"
    limits = "200 requests an hour, 20,000 a month"
    # large2x is at most 1880 px wide: plenty for training; originals can be 20 MB.
    sizes = ("large2x", "large", "original", "medium")

    def page(self, query: str, cursor: Any) -> tuple[list[SearchHit], Any]:
        # Later pages: the parameters of the answer's next_page URL, sent to our base URL
        # (following the URL itself would bypass CLEARCLASS_PEXELS_URL).
        params = {"query": query, "per_page": 80, "page": cursor} \
            if isinstance(cursor, int) else cursor
        body = self._get_json("/v1/search", params, {"Authorization": self.key}) or {}
        found = []
        for photo in _list(body.get("photos")):
            src = photo.get("src") or {}
            url = next((src[s] for s in self.sizes if src.get(s)), "")
            found.append(SearchHit(url, str(photo.get("url") or ""),
                                   str(photo.get("photographer") or ""), self.licence,
                                   str(photo.get("id", "")), self.name))
        next_page = body.get("next_page")
        if not next_page:
            return found, None
        follow = dict(parse_qsl(urlsplit(str(next_page)).query))
        return found, {**params, **follow} if follow else \
            {**params, "page": int(params.get("page") or 1) + 1}


class Unsplash(Provider):
    """Unsplash: GET /search/photos with "Authorization: Client-ID KEY", 30 photos a page."""

    name, title = "unsplash", "Unsplash"
    key_variable = "UNSPLASH_ACCESS_KEY"
    key_help = "https://unsplash.com/oauth/applications (create an app; use its Access Key)"
    default_url = "https://api.unsplash.com"
    licence = "Unsplash License"
    limits = "50 requests an hour for a new app, 5,000 once approved"
    sizes = ("regular", "full", "raw", "small")  # regular: 1080 px wide
    last_page = 200  # later pages come back empty whatever total_pages says

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Client-ID {self.key}", "Accept-Version": "v1"}

    def page(self, query: str, number: int) -> tuple[list[SearchHit], int | None]:
        body = self._get_json("/search/photos",
                              {"query": query, "page": number, "per_page": 30},
                              self._headers()) or {}
        found = []
        for photo in _list(body.get("results")):
            urls, links = photo.get("urls") or {}, photo.get("links") or {}
            url = next((urls[s] for s in self.sizes if urls.get(s)), "")
            found.append(SearchHit(url, str(links.get("html") or ""),
                                   str((photo.get("user") or {}).get("name") or ""),
                                   self.licence, str(photo.get("id", "")), self.name,
                                   str(links.get("download_location") or "")))
        total_pages = body.get("total_pages")
        more = number < min(int(total_pages), self.last_page) if isinstance(total_pages, int) \
            else bool(found)
        return found, number + 1 if more else None

    def used(self, candidate: SearchHit) -> None:
        ping = candidate.download_ping
        # The key goes only to the API it belongs to, never to a URL an answer pointed at.
        if not ping or urlsplit(ping)[:2] != urlsplit(self.base_url)[:2]:
            return
        try:
            self.client.get(ping, headers=self._headers()).close()
        except FetchError as e:
            warn(f"Could not tell Unsplash that photo {candidate.photo_id} was downloaded "
                 f"(its API guidelines ask for it): {e}")


class Pixabay(Provider):
    """Pixabay: GET /api/?key=KEY (the only way it takes one), 200 photos a page, 500 in all."""

    name, title = "pixabay", "Pixabay"
    key_variable = "PIXABAY_API_KEY"
    key_help = "https://pixabay.com/api/docs/ (free; the key is shown there once logged in)"
    default_url = "https://pixabay.com"
    licence = "Pixabay Content License"
    limits = "100 requests a minute"
    per_page = 200
    max_hits = 500  # the API returns at most 500 results per query

    def page(self, query: str, number: int) -> tuple[list[SearchHit], int | None]:
        params = {"key": self.key, "q": query[:100], "page": number, "per_page": self.per_page,
                  "image_type": "photo"}
        body = self._get_json("/api/", params)
        if body is None:
            return [], None
        found = [SearchHit(str(hit.get("largeImageURL") or hit.get("webformatURL") or ""),
                           str(hit.get("pageURL") or ""), str(hit.get("user") or ""),
                           self.licence, str(hit.get("id", "")), self.name)
                 for hit in _list(body.get("hits"))]
        total = body.get("totalHits")
        more = number * self.per_page < min(int(total), self.max_hits) \
            if isinstance(total, int) else bool(found)
        return found, number + 1 if more else None

    def _says_no_more(self, error: FetchError) -> bool:
        # A page past the end is a 400: '[ERROR 400] "page" is out of valid range.'
        return error.status == 400 and "out of valid range" in error.detail

    def _refusal(self, error: FetchError) -> AcquireError:
        # Pixabay refuses a key with a 400 too: "[ERROR 400] Invalid or missing API key".
        if error.status == 400 and "key" in error.detail.lower():
            return CredentialsError(f"Pixabay refused the API key in {self.key_variable} "
                                    f"({error}). Check the key at {self.key_help}.")
        return super()._refusal(error)


# flickr.photos.licenses.getInfo
FLICKR_LICENCES = {
    "0": "All Rights Reserved", "1": "CC BY-NC-SA 2.0", "2": "CC BY-NC 2.0",
    "3": "CC BY-NC-ND 2.0", "4": "CC BY 2.0", "5": "CC BY-SA 2.0", "6": "CC BY-ND 2.0",
    "7": "No known copyright restrictions", "8": "United States Government Work",
    "9": "CC0 1.0", "10": "Public Domain Mark 1.0",
}


class Flickr(Provider):
    """Flickr: flickr.photos.search by relevance, reusable licences only, 100 a page."""

    name, title = "flickr", "Flickr"
    key_variable = "FLICKR_API_KEY"
    key_help = "https://www.flickr.com/services/apps/create/ (a non-commercial key is free)"
    default_url = "https://api.flickr.com"
    limits = "about 3,600 queries an hour"
    # Only photos their owners let others reuse: everything but "All Rights Reserved".
    licences = "1,2,3,4,5,6,7,8,9,10"
    per_page = 100
    max_results = 4000  # deeper pages repeat earlier results
    sizes = ("url_l", "url_c", "url_z", "url_m")  # 1024, 800, 640, 500 px on the long side

    def page(self, query: str, number: int) -> tuple[list[SearchHit], int | None]:
        params = {"method": "flickr.photos.search", "api_key": self.key, "text": query,
                  "license": self.licences, "sort": "relevance", "content_type": 1,
                  "media": "photos", "extras": "license,owner_name," + ",".join(self.sizes),
                  "per_page": self.per_page, "page": number, "format": "json",
                  "nojsoncallback": 1}
        body = self._get_json("/services/rest/", params) or {}
        if body.get("stat") != "ok":
            message = f"{body.get('message') or 'no reason given'} (code {body.get('code')})"
            if body.get("code") in (100, "100"):
                raise CredentialsError(f"Flickr refused the API key in {self.key_variable}: "
                                       f"{message}. Check the key at {self.key_help}.")
            raise AcquireError(f"Flickr search failed: {message}.")
        photos = body.get("photos") or {}
        found = []
        for photo in _list(photos.get("photo")):
            pid, owner = str(photo.get("id", "")), str(photo.get("owner", ""))
            url = next((photo[s] for s in self.sizes if photo.get(s)), "")
            if not url and photo.get("server") and photo.get("secret"):
                url = f"https://live.staticflickr.com/{photo['server']}/{pid}_" \
                      f"{photo['secret']}_b.jpg"
            found.append(SearchHit(url, f"https://www.flickr.com/photos/{owner}/{pid}",
                                   str(photo.get("ownername") or owner),
                                   FLICKR_LICENCES.get(str(photo.get("license")), ""),
                                   pid, self.name))
        pages = _int(photos.get("pages"))
        more = number < pages and number * self.per_page < self.max_results
        return found, number + 1 if more else None


class SerpApi(Provider):
    """Google Images through SerpApi: GET /search.json?engine=google_images, 100 a page."""

    name, title = "serpapi", "SerpApi (Google Images)"
    key_variable = "SERPAPI_API_KEY"
    key_help = "https://serpapi.com/manage-api-key (a free plan exists)"
    default_url = "https://serpapi.com"
    limits = "your plan's searches per month and per hour"
    first_page = 0  # ijn counts from 0, 100 photos a page

    @staticmethod
    def _no_results(text: str) -> bool:
        return "hasn't returned any results" in text

    def _says_no_more(self, error: FetchError) -> bool:
        return self._no_results(error.detail)

    def page(self, query: str, number: int) -> tuple[list[SearchHit], int | None]:
        params = {"engine": "google_images", "q": query, "ijn": number, "api_key": self.key}
        body = self._get_json("/search.json", params)
        if body is None or self._no_results(str(body.get("error") or "")):
            return [], None
        if body.get("error"):
            raise AcquireError(f"SerpApi search failed: {body['error']}")
        found = [SearchHit(str(r.get("original") or ""), str(r.get("link") or ""), "", "", "",
                           self.name) for r in _list(body.get("images_results"))]
        return found, number + 1 if found else None


class DuckDuckGo(Provider):
    """DuckDuckGo image search through the `ddgs` package; no key, no licence data."""

    name, title = "duckduckgo", "DuckDuckGo"
    per_page = 100

    def page(self, query: str, number: int) -> tuple[list[SearchHit], int | None]:
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException, TimeoutException

        try:
            results = DDGS(timeout=max(1, round(self.client.timeout))).images(
                query, max_results=self.per_page, page=number)
        except TimeoutException:
            raise AcquireError(
                "DuckDuckGo did not answer the image search in time. Check the internet "
                "connection, or try again later or with another --provider.") from None
        except DDGSException as e:
            # ddgs 9 reports an empty result (and a refusal it swallowed) this way.
            if "no results" in str(e).lower():
                return [], None
            raise AcquireError(
                f"DuckDuckGo image search failed: {e}. DuckDuckGo limits automated searches; "
                "wait a few minutes, or use another --provider.") from None
        found = [SearchHit(_absolute(str(r.get("image") or "")), str(r.get("url") or ""), "",
                           "", "", self.name) for r in results or [] if isinstance(r, dict)]
        return found, number + 1 if found else None


PROVIDERS: dict[str, type[Provider]] = {
    p.name: p for p in (DuckDuckGo, Pexels, Unsplash, Pixabay, Flickr, SerpApi)
}


def get_provider(name: str, client: HttpClient,
                 environ: Mapping[str, str] | None = None) -> Provider:
    """The provider called `name` (as --provider says it), set up from the environment.

    Providers other than duckduckgo need an API key (Pexels: PEXELS_API_KEY); without it
    this raises a `CredentialsError` that says where to get one.

    Example:
        pexels = get_provider("pexels", HttpClient(), environ={"PEXELS_API_KEY": "my-key-123"})
        print(pexels.title, pexels.base_url)  # Pexels https://api.pexels.com
    """
    cls = PROVIDERS.get(name.strip().lower())
    if cls is None:
        raise AcquireError(f"Unknown image provider {name!r}; choose one of "
                           f"{', '.join(PROVIDERS)}.")
    return cls.from_environment(client, environ)


def _absolute(url: str) -> str:
    """Web results sometimes give protocol-relative URLs (//host/photo.jpg)."""
    return "https:" + url if url.startswith("//") else url


def _list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
