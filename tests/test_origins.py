import pytest

from app.policy.origins import (
    InvalidOrigin,
    candidate_entries,
    canonical_entry,
    canonical_origin,
    is_dev_loopback,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("https://client-a.com", "https://client-a.com"),
        ("HTTPS://Client-A.COM", "https://client-a.com"),
        ("https://client-a.com:443", "https://client-a.com"),
        ("http://client-a.com:80", "http://client-a.com"),
        ("https://client-a.com:8443", "https://client-a.com:8443"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
    ],
)
def test_canonical_origin(raw, canonical):
    assert canonical_origin(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "null",
        "*",
        "client-a.com",
        "https://client-a.com/",
        "https://client-a.com/path",
        "https://client-a.com?x=1",
        "https://client-a.com#x",
        "https://user@client-a.com",
        "https://client-a.com.",
        "ftp://client-a.com",
        "https://client-a.com:0",
        "https://client-a.com:99999",
        "https://client-a.com:44a",
        " https://client-a.com",
        "https://client-a.com, https://evil.com",
        "https://client_a.com",
        "https://*.client-a.com",
        "https://cli\u0000ent.com",
        "https://" + "a" * 300 + ".com",
    ],
)
def test_not_an_origin(raw):
    with pytest.raises(InvalidOrigin):
        canonical_origin(raw)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("https://*.client-a.com", "https://*.client-a.com"),
        ("https://*.Client-A.com:443", "https://*.client-a.com"),
        ("https://*.client-a.com:8443", "https://*.client-a.com:8443"),
    ],
)
def test_wildcard_entries(raw, canonical):
    assert canonical_entry(raw) == canonical


@pytest.mark.parametrize(
    "raw", ["*", "https://*", "https://*.com", "https://*.*.client-a.com", "https://a.*.com",
            "https://*client-a.com", "https://*.127.0.0.1", "/^https:\\/\\/.*$/", "null"],
)  # fmt: skip
def test_invalid_entries(raw):
    with pytest.raises(InvalidOrigin):
        canonical_entry(raw)


def test_candidates_are_the_origin_then_each_wildcard_with_two_labels_left():
    assert candidate_entries("https://a.b.client-a.com:8443") == [
        "https://a.b.client-a.com:8443",
        "https://*.b.client-a.com:8443",
        "https://*.client-a.com:8443",
    ]
    assert candidate_entries("https://client-a.com") == ["https://client-a.com"]
    assert candidate_entries("http://127.0.0.1:3000") == ["http://127.0.0.1:3000"]


@pytest.mark.parametrize(
    ("origin", "loopback"),
    [
        ("http://localhost:5173", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost", True),
        ("http://localhost.evil.com", False),
        ("http://evil-localhost.com", False),
        ("http://mylocalhost:3000", False),
        ("http://127.0.0.1.nip.io", False),
    ],
)
def test_dev_loopback_is_hostname_equality(origin, loopback):
    assert is_dev_loopback(canonical_origin(origin)) is loopback
