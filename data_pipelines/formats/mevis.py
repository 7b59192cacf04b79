"""Reader of the MeViS layout: `<root>/<split>/{JPEGImages/, meta_expressions.json, mask_dict.json}` (no type_id)."""

from __future__ import annotations

import os

from data_pipelines.formats.revos import VOSReader


class MeViSReader(VOSReader):
    """MeViS: ReVOS schema without `type_id` (always 0); `valid` has no mask_dict, so its masks are [0, T, H, W]."""

    task = "mevis"
    has_type_id = False
    SPLITS = ("train", "valid_u", "valid")

    def __init__(self, root: str, split: str, *, skip_bad_examples: bool = False):
        d = os.path.join(str(root), split)
        md = os.path.join(d, "mask_dict.json")
        super().__init__(root, split, meta_path=os.path.join(d, "meta_expressions.json"),
                         image_dir=os.path.join(d, "JPEGImages"),
                         mask_dict_path=md if (split != "valid" or os.path.isfile(md)) else None,
                         skip_bad_examples=skip_bad_examples)
