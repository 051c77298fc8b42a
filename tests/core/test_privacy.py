"""The pure scrubber (probe.core.privacy): every textual form of our addresses goes, nothing else does."""

from __future__ import annotations

from typing import Any

import pytest

from probe.core.privacy import SCRUBBED, AddressBook, own_addresses, scrub_record, scrub_text, scrub_value

OWN = own_addresses(["198.18.0.2", "2001:db8:1:2::abcd", "fe80::1%eth0", "127.0.0.1", "::1", "not-an-address"])
S = SCRUBBED


@pytest.mark.parametrize(("text", "expected", "count"), [
    # IPv4, exact, in every place a page or header puts it
    ("Your IP address is 198.18.0.2", f"Your IP address is {S}", 1),
    ("Your IP address is 198.18.0.2.", f"Your IP address is {S}.", 1),
    ("198.18.0.2:443", f"{S}:443", 1),
    ("http://198.18.0.2/x?ip=198.18.0.2&y=1", f"http://{S}/x?ip={S}&y=1", 2),
    ("visitor=198.18.0.2; Path=/", f"visitor={S}; Path=/", 1),
    ("198.18.0.2, 198.18.30.30", f"{S}, 198.18.30.30", 1),
    ("198.018.000.002", S, 1),  # zero-padded octets
    ("host 198-18-0-2.dyn.example", f"host {S}.dyn.example", 1),  # reverse-DNS style
    ("::ffff:198.18.0.2", S, 1),  # IPv4-mapped
    ("<title>198.18.0.2</title>", f"<title>{S}</title>", 1),
    # IPv4 neighbours are other hosts: evidence, never scrubbed
    ("198.18.0.1", "198.18.0.1", 0),
    ("198.18.0.20", "198.18.0.20", 0),
    ("198.18.0.23:80", "198.18.0.23:80", 0),
    ("1198.18.0.2", "1198.18.0.2", 0),
    ("198.18.0.2.5", "198.18.0.2.5", 0),  # a longer dotted name, not the address
    ("198-18-0-20", "198-18-0-20", 0),
    ("version 2.198.18.0", "version 2.198.18.0", 0),
    # IPv6: compressed, expanded, bracketed, %3A-encoded, the whole /64
    ("2001:db8:1:2::abcd", S, 1),
    ("2001:0db8:0001:0002:0000:0000:0000:abcd", S, 1),
    ("[2001:db8:1:2::abcd]:443", f"[{S}]:443", 1),
    ("https://[2001:DB8:1:2::ABCD]/", f"https://[{S}]/", 1),
    ("ip=2001%3Adb8%3A1%3A2%3A%3Aabcd; path=/", f"ip={S}; path=/", 1),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", S, 1),  # same /64, another (privacy) interface id
    ("addr 2001:db8:1:2::1: next", f"addr {S}: next", 1),
    ("2001:db8:1:3::abcd", "2001:db8:1:3::abcd", 0),  # another /64
    ("fe80::1", S, 1),
    ("fe80::2", "fe80::2", 0),  # link-local: exact only (fe80::/64 is everyone's)
    # loopback is nobody's identity; times and MACs are not addresses
    ("127.0.0.1:8080 ::1", "127.0.0.1:8080 ::1", 0),
    ("at 10:20:30", "at 10:20:30", 0),
    ("aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff", 0),
    ("", "", 0),
])
def test_scrub_text(text: str, expected: str, count: int) -> None:
    assert scrub_text(text, OWN) == (expected, count)


def test_nothing_known_scrubs_nothing() -> None:
    assert scrub_text("198.18.0.2", own_addresses([])) == ("198.18.0.2", 0)
    assert not own_addresses(["127.0.0.1", "::", "junk"])


def test_values_are_scrubbed_at_every_depth_keys_included() -> None:
    value: dict[str, Any] = {"198.18.0.2": ["a 198.18.0.2", 3, None, {"x": ("198.18.0.2",)}], "n": 1.5}
    scrubbed, count = scrub_value(value, OWN)
    assert scrubbed == {S: [f"a {S}", 3, None, {"x": [S]}], "n": 1.5}
    assert count == 3


def test_record_marker_counts_and_adds_up() -> None:
    record = {"input": "198.18.0.2:443", "target": "t", "test_keys": {"address": "198.18.0.2", "port": 443}}
    out = scrub_record(record, OWN)
    assert out == {"input": f"{S}:443", "target": "t", "test_keys": {"address": S, "port": 443, "scrubbed": 2}}
    assert record["input"] == "198.18.0.2:443"  # the input is not changed in place
    clean = {"input": "198.18.10.1:443", "test_keys": {"port": 443}}
    assert scrub_record(clean, OWN) == clean  # no marker when nothing was scrubbed


def test_address_book_rediscovers_when_stale_and_keeps_old_addresses() -> None:
    now = [0.0]
    found = [["198.18.0.2"]]
    calls: list[float] = []

    def discover() -> list[str]:
        calls.append(now[0])
        return found[0]

    book = AddressBook(discover=discover, max_age=30, clock=lambda: now[0])
    assert scrub_text("198.18.0.2", book.current())[1] == 1
    found[0] = ["198.18.0.9"]  # DHCP gave a new address
    now[0] = 10
    assert scrub_text("198.18.0.9", book.current())[1] == 0  # not stale yet
    now[0] = 31
    own = book.current()
    assert scrub_text("198.18.0.9 198.18.0.2", own)[1] == 2  # the old one still names the volunteer
    assert calls == [0.0, 31]
    book.learn("203.0.113.7")  # the helper told us our public address
    assert scrub_text("203.0.113.7", book.current())[1] == 1


def test_address_book_is_bounded() -> None:
    book = AddressBook(limit=3)
    book.learn("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4")
    assert scrub_text("192.0.2.1 192.0.2.4", book.current())[1] == 1
