"""The bundled class names: counts, no duplicates, and first / last names as the published lists have them
(the official ILA / X-CLIP label CSVs, the SSv2 labels JSON order, UCF101's classInd.txt, HMDB51's splits)."""
from __future__ import annotations

import pytest

from ila_fast.data import read_labels
from ila_fast.data.datasets import LABEL_SETS, bundled_labels_path, bundled_names

PUBLISHED = {  # set -> (count, first names, last name)
    "kinetics400": (400, ["abseiling", "air drumming", "answering questions"], "zumba"),
    "kinetics600": (600, ["abseiling", "acting in play", "adjusting glasses"], "zumba"),
    "kinetics700": (700, ["abseiling", "acting in play", "adjusting glasses"], "zumba"),
    "ssv2": (174, ["Approaching something with your camera", "Attaching something to something",
                   "Bending something so that it deforms"], "Wiping something off of something"),
    "ucf101": (101, ["ApplyEyeMakeup", "ApplyLipstick", "Archery"], "YoYo"),
    "hmdb51": (51, ["brush hair", "cartwheel", "catch"], "wave"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_bundled_names(name):
    count, first, last = PUBLISHED[name]
    names = bundled_names(name)
    assert len(names) == count == LABEL_SETS[name]
    assert len(set(names)) == count
    assert names[:3] == first and names[-1] == last
    assert all(n == n.strip() and n for n in names)
    assert read_labels(name) == names == read_labels(bundled_labels_path(name))  # a set's name works as a path


def test_spot_checks_inside_the_lists():
    k400 = bundled_names("kinetics400")
    assert k400 == sorted(k400)  # the official Kinetics label CSVs are alphabetical
    assert k400[196] == "massaging person's head" and k400[219] == "playing bagpipes"
    ssv2 = bundled_names("ssv2")
    assert ssv2[120] == "Putting something, something and something on the table"  # commas survive the CSV
    hmdb = bundled_names("hmdb51")
    assert hmdb[20:22] == ["kick ball", "kick"]  # the sorted split-file names' order (kick_ball_ < kick_test)
    assert bundled_names("ucf101")[36] == "HandstandPushups"


def test_unknown_set_names_the_nearest():
    with pytest.raises(ValueError, match=r"'kinetics-400' is not a bundled label set \(did you mean 'kinetics400'"):
        bundled_names("kinetics-400")
