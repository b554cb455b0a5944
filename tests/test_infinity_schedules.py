"""Infinity's dynamic-resolution schedules: upstream's table, its pixel budgets and its nearest-template pick.

Expected values are copied from FoundationVision/Infinity 4c27bbb, infinity/utils/dynamic_resolution.py:
lines 7-14 (ratio2hws), 16-21 (portrait templates int(1/ratio*1000)/1000), 23-39 (7/10/12/13 scales for
0.06M/0.25M/0.60M/1M, pixel = last (h, w) * 16), 41-44 (template order) and, for the pick, the argmin in
tools/interactive_infer.ipynb / run_infinity.py: h_div_w_templates[np.argmin(np.abs(h_div_w_templates - h_div_w))].
(The whole table, all 60 schedules, and the pick over 20000 random ratios were also compared with upstream's
module directly when this file was written.)
"""
import pytest

from var_fast.infinity.schedules import (PIXEL_BUDGETS, PUBLISHED_RATIOS, full_grid_of, image_size,
                                         nearest_template, parse_aspect_ratio, scale_schedule, vae_schedule)

UPSTREAM_TEMPLATES = (1.0, 1.25, 0.8, 1.333, 0.75, 1.5, 0.666, 1.75, 0.571, 2.0, 0.5, 2.5, 0.4, 3.0, 0.333)


def test_templates_in_upstreams_order():
    assert PUBLISHED_RATIOS == UPSTREAM_TEMPLATES
    assert PIXEL_BUDGETS == {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}


@pytest.mark.parametrize("ratio,pixels,last,size", [
    (1.0, "1M", (64, 64), (1024, 1024)),
    (1.0, "0.25M", (32, 32), (512, 512)),
    (1.0, "0.06M", (16, 16), (256, 256)),
    (1.333, "1M", (72, 54), (1152, 864)),
    (0.75, "1M", (54, 72), (864, 1152)),
    (3.0, "1M", (111, 37), (1776, 592)),
    (0.333, "0.25M", (18, 54), (288, 864)),
    (0.571, "0.60M", (40, 70), (640, 1120)),
    (2.5, "0.06M", (25, 10), (400, 160)),
])
def test_upstream_entries(ratio, pixels, last, size):
    s = scale_schedule(ratio, pixels)
    assert len(s) == PIXEL_BUDGETS[pixels] and s[-1] == (1,) + last and image_size(ratio, pixels) == size
    assert all(t == 1 for t, _, _ in s)


def test_full_schedules():
    assert scale_schedule(1.25, "1M") == [(1, h, w) for h, w in [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16),
                                                                 (25, 20), (30, 24), (35, 28), (45, 36), (55, 44), (70, 56)]]
    assert scale_schedule(0.5, "0.06M") == [(1, h, w) for h, w in [(1, 1), (2, 2), (2, 4), (3, 6), (5, 10), (8, 16), (11, 22)]]


@pytest.mark.parametrize("asked,template", [
    (1.0, 1.0), (1.1, 1.0), (1.13, 1.25), (0.85, 0.8), (0.9, 1.0), (16 / 9, 1.75), (9 / 16, 0.571), (10.0, 3.0), (0.01, 0.333),
    ("16:9", 0.571), ("9:16", 1.75), ("4:3", 0.75), ("1:1", 1.0), ("1.5", 1.5), (1.125, 1.0),  # 1.125: a tie, the first
])
def test_nearest_template(asked, template):
    assert nearest_template(asked) == template


@pytest.mark.parametrize("bad", [0, -1.0, "abc", "16:0", "0:9", float("nan"), float("inf"), "1:2:3"])
def test_bad_ratio(bad):
    with pytest.raises(ValueError, match="aspect ratio"):
        parse_aspect_ratio(bad)


def test_bad_pixels_and_schedules():
    with pytest.raises(ValueError, match="pixels must be one of"):
        scale_schedule(1.0, "2M")
    assert full_grid_of(scale_schedule(0.75, "0.06M")) == (54, 72)
    assert full_grid_of([(1, 1, 1), (1, 2, 2), (1, 4, 4)]) == (64, 64)  # a prefix: its template
    with pytest.raises(ValueError, match="not the start of any published template"):
        full_grid_of([(1, 1, 1), (1, 3, 5)])
    with pytest.raises(ValueError, match=r"list of \(1, h, w\)"):
        full_grid_of([(2, 1, 1)])
    assert vae_schedule([(1, 2, 3)], patchify=True) == [(1, 4, 6)]
    assert vae_schedule([(1, 2, 3)], patchify=False) == [(1, 2, 3)]
