"""Lore of the offline game master's setting: the port city of Saltmere."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    """One lore entry, found by any of its keywords (a trailing plural `s` also matches)."""

    title: str
    keywords: tuple[str, ...]
    text: str


TOPICS: tuple[Topic, ...] = (
    Topic(
        title="Saltmere",
        keywords=("saltmere", "city", "port", "harbor", "harbour", "town", "docks"),
        text=(
            "Saltmere is a port city built on the ribs of a sunken mountain. Its streets climb "
            "in terraces from the tide-flats to the Bellkeep, whose nine bells are rung to warn "
            "of storms, tax collectors and, once a generation, the dragon."
        ),
    ),
    Topic(
        title="the Lantern Guild",
        keywords=("guild", "lantern", "guildmaster", "guildmistress", "mapmaker"),
        text=(
            "The Lantern Guild keeps the lighthouses and sells the only honest sea charts in "
            "Saltmere. It is run by Guildmistress Odile Varr, a one-eyed cartographer who "
            "decides who sails by night; everyone agrees she trades in secrets as well as maps."
        ),
    ),
    Topic(
        title="the dragon Vessarine",
        keywords=("dragon", "vessarine", "wyrm", "drake"),
        text=(
            "Vessarine, the Ash-Tide Dragon, sleeps in the drowned caldera beyond the harbor. "
            "Her scales are the grey of wet slate and she wakes when the bells ring nine times. "
            "The Lantern Guild pays her a tithe of lamp oil each winter, and no one asks why."
        ),
    ),
    Topic(
        title="the Gilded Eel",
        keywords=("tavern", "inn", "eel", "gilded", "drink", "ale"),
        text=(
            "The Gilded Eel is the dockside tavern where adventurers find work. Its keeper, "
            "Brannoc Tull, pours black kelp ale and pins rumors and bounties to the beam above "
            "the bar. Fights are allowed; breaking the eel-shaped lamp is not."
        ),
    ),
)

_PATTERNS = tuple(
    (topic, re.compile(r"\b(?:" + "|".join(map(re.escape, topic.keywords)) + r")s?\b"))
    for topic in TOPICS
)


def topic_titles() -> str:
    """`Saltmere, the Lantern Guild, the dragon Vessarine and the Gilded Eel`."""
    titles = [topic.title for topic in TOPICS]
    return ", ".join(titles[:-1]) + " and " + titles[-1]


def find_lore(text: str) -> list[Topic]:
    """Topics whose keywords appear in `text` (lower-cased by the caller), in TOPICS order."""
    return [topic for topic, pattern in _PATTERNS if pattern.search(text)]
