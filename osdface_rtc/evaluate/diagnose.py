"""Where does a restorer's gain go between a crop and a call? One change at a time.

``python -m osdface_rtc.evaluate.diagnose --model DIR --condition x3-vp8-120k --limit 60``

On the same val faces, each row changes one thing on the way from the training setting to the
live path and reports the model's PSNR gain over its input (dB, face ellipse):

1. ``crop, crop-level damage``: the photo resized to the crop, damaged by the crop-level
   ``degrade`` preset (what the shipped model was trained on);
2. ``crop, call damage, true alignment``: the whole frame damaged like a call, the crop cut at
   the placement's exact affine (no detector), scored in crop space against the clean crop;
3. ``crop, call damage, detected alignment``: the same, but the affine from the pipeline's
   detector and aligner on the damaged frame (what the live path feeds the model);
4. ``frame, pasted``: the full pipeline (residual paste, low-frequency removal), scored in the
   frame against the clean frame;
5. ``frame, pasted, no low-frequency removal``: 4 with ``BlendConfig.color_fix = False``;
6. ``frame, pasted, true alignment``: 4 with the exact affine.

Rows are split by the face's size in the frame (photo side below / above ``--split-px``).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import cv2
import numpy as np

from ..data.call import parse_damage, damage_clip
from ..data.degrade import degrade
from ..data.faces import list_faces
from ..data.livepairs import read_photo
from ..data.regions import face_mask
from ..data.scenes import SceneConfig, make_scene
from ..pipeline.align import face_affine, warp_crop
from ..pipeline.blend import BlendConfig, paste_faces
from ..pipeline.detect import DetectorConfig, FaceDetector
from ..pipeline.types import AlignedFaces
from .metrics import psnr

ROWS = ("crop, crop-level damage", "crop, call damage, true alignment",
        "crop, call damage, detected alignment", "frame, pasted",
        "frame, pasted, no low-frequency removal", "frame, pasted, true alignment")


def true_affine(photo_to_frame: np.ndarray, photo_size: int, size: int) -> np.ndarray:
    """Frame -> crop affine that frames the crop exactly like the photo resized to ``size``."""
    m = cv2.invertAffineTransform(photo_to_frame)
    return m * (size / photo_size)


def diagnose(restorer, photos: list[np.ndarray], condition: str, level: str = "medium",
             seed: int = 0, split_px: float = 220.0) -> dict[str, dict[str, list[float]]]:
    """``{row: {"small"/"large": [gain per face]}}`` (see the module docstring)."""
    s = restorer.face_size
    damage = parse_damage(condition)
    det = FaceDetector(DetectorConfig(mode="both", min_face=16))
    cmask = face_mask(s)
    out = {r: {"small": [], "large": []} for r in ROWS}
    try:
        for i, photo in enumerate(photos):
            rng = np.random.default_rng([seed, i])
            clip = make_scene(photo, rng, SceneConfig())
            k = len(clip.frames) - 1
            side = float(np.sqrt(abs(np.linalg.det(clip.photo_to_frame[k][:, :2])))) * clip.photo_size
            group = "small" if side < split_px else "large"
            clean, damaged = clip.frames[k], damage_clip(clip.frames, damage)[k]
            fmask = clip.face_mask(k)

            def crop_gain(lq: np.ndarray, hq: np.ndarray) -> float:
                res = restorer.restore(lq[None])[0]
                return psnr(res, hq, cmask) - psnr(lq, hq, cmask)

            hq = cv2.resize(photo, (s, s), interpolation=cv2.INTER_AREA)
            out[ROWS[0]][group].append(crop_gain(degrade(hq, rng, level), hq))
            m_true = true_affine(clip.photo_to_frame[k], clip.photo_size, s)
            out[ROWS[1]][group].append(crop_gain(warp_crop(damaged, m_true, s), warp_crop(clean, m_true, s)))
            faces = det.detect(damaged)
            if not faces:
                continue
            centre = clip.photo_to_frame[k] @ np.array([clip.photo_size / 2] * 2 + [1.0])
            face = min(faces, key=lambda f: np.hypot(*(f.box[:2] + f.box[2:]) / 2 - centre))
            m_det = face_affine(face, s)
            out[ROWS[2]][group].append(crop_gain(warp_crop(damaged, m_det, s), warp_crop(clean, m_det, s)))
            base = psnr(damaged, clean, fmask)
            for row, affine, cfg in ((ROWS[3], m_det, BlendConfig()),
                                     (ROWS[4], m_det, replace(BlendConfig(), color_fix=False)),
                                     (ROWS[5], m_true, BlendConfig())):
                lq = warp_crop(damaged, affine, s)
                inp = AlignedFaces(lq[None], affine[None], [0])
                res = AlignedFaces(restorer.restore(lq[None]), affine[None], [0])
                out[row][group].append(psnr(paste_faces(damaged, res, inp, 1.0, cfg), clean, fmask) - base)
    finally:
        det.close()
    return out


def format_table(result: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"{'step':44s} {'all':>14s} {'small faces':>14s} {'large faces':>14s}"]
    for row, groups in result.items():
        both = groups["small"] + groups["large"]
        cells = [f"{np.mean(v):+.2f} (n={len(v)})" if v else "n/a" for v in (both, groups["small"], groups["large"])]
        lines.append(f"{row:44s} " + " ".join(f"{c:>14s}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..restorers import load_restorer

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="restorer spec (default: the shipped model)")
    p.add_argument("--condition", default="x3-vp8-120k")
    p.add_argument("--level", default="medium", help="crop-level preset for row 1")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--split-px", type=float, default=220.0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    restorer = load_restorer(a.model)
    photos = [read_photo(f) for f in list_faces("val")[: a.limit]]
    result = diagnose(restorer, photos, a.condition, a.level, split_px=a.split_px)
    print(f"model gain over its input, dB PSNR in the face ellipse ({restorer.name}, {a.condition}, "
          f"{len(photos)} val faces)")
    print(format_table(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(model=restorer.name, condition=a.condition, limit=a.limit, rows=result), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
