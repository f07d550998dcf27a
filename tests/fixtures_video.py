"""On-disk video fixtures written by the tests (DAVIS layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datasets.davis import save_indexed_png
from ground.palette import palette


def write_davis_fixture(root: Path, sequences: dict[str, np.ndarray]) -> None:
    """A DAVIS-layout folder: per sequence frames [T, H, W, 3] uint8 derived from label maps."""
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(sequences) + "\n")
    colours = palette(256)
    for seq, labels in sequences.items():
        (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        for t, lab in enumerate(labels):
            Image.fromarray(colours[lab]).save(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", quality=95)
            save_indexed_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", lab)


def _frames_from_masks(masks: np.ndarray) -> np.ndarray:
    """RGB frames [T, H, W, 3] uint8 in which the foreground is bright on a dark textured background."""
    t, h, w = masks.shape
    rng = np.random.default_rng(0)
    base = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    frames = np.repeat(base[None], t, axis=0)
    frames[masks] = (220, 180, 40)
    return frames


def moving_box_masks(num_frames: int, size: tuple[int, int], box: tuple[int, int, int, int],
                     step: int = 1) -> np.ndarray:
    """Bool [T, H, W]: a box (y0, x0, h, w) moving ``step`` pixels right per frame."""
    masks = np.zeros((num_frames, *size), bool)
    y0, x0, bh, bw = box
    for t in range(num_frames):
        masks[t, y0 : y0 + bh, x0 + t * step : x0 + t * step + bw] = True
    return masks


def write_segtrack_fixture(root: Path, sequences: dict[str, list[np.ndarray]], frame_ext: str = ".png") -> None:
    """SegTrack-v2 as released: ``JPEGImages/<seq>/<seq>_NNNNN<ext>`` and ``GroundTruth/<seq>/``
    holding 0/255 masks of the same names; a sequence given several objects gets ``1/``, ``2/`` ...
    sub-folders (one per object)."""
    for seq, objects in sequences.items():
        union = np.logical_or.reduce(objects)
        (root / "JPEGImages" / seq).mkdir(parents=True)
        for t, frame in enumerate(_frames_from_masks(union)):
            Image.fromarray(frame).save(root / "JPEGImages" / seq / f"{seq}_{t:05d}{frame_ext}")
        for k, obj in enumerate(objects, 1):
            folder = root / "GroundTruth" / seq / (str(k) if len(objects) > 1 else "")
            folder.mkdir(parents=True, exist_ok=True)
            for t, m in enumerate(obj):
                Image.fromarray((m * 255).astype(np.uint8)).save(folder / f"{seq}_{t:05d}.png")


def write_fbms_fixture(root: Path, sequences: dict[str, tuple[np.ndarray, list[int]]]) -> None:
    """Prepared FBMS-59: ``JPEGImages/<seq>/00001.jpg ...`` (1-based) and 0/255 masks
    ``Annotations/<seq>/<NNNNN>.png`` for the annotated frame numbers only."""
    for seq, (masks, annotated) in sequences.items():
        (root / "JPEGImages" / seq).mkdir(parents=True)
        (root / "Annotations" / seq).mkdir(parents=True)
        for t, frame in enumerate(_frames_from_masks(masks), 1):
            Image.fromarray(frame).save(root / "JPEGImages" / seq / f"{t:05d}.jpg", quality=95)
        for number in annotated:
            Image.fromarray((masks[number - 1] * 255).astype(np.uint8)).save(
                root / "Annotations" / seq / f"{number:05d}.png")


def write_jhmdb_fixture(root: Path, videos: dict[str, np.ndarray], size: tuple[int, int] = (24, 32),
                        extra_frames: dict[str, int] | None = None, test: set[str] | None = None) -> None:
    """JHMDB: ``Rename_Images/<action>/<video>/00001.png ...``, ``joint_positions/<action>/<video>/
    joint_positions.mat`` (``pos_img`` [2, 15, T], 1-based) from 0-based joints [T, 15, 2], and
    ``splits/<action>_test_split1.txt`` (label 2 = test: ``test``, default every video)."""
    import scipy.io

    extra_frames = extra_frames or {}
    splits: dict[str, list[str]] = {}
    for vid, joints in videos.items():
        action, name = vid.split("/")
        frames_dir = root / "Rename_Images" / action / name
        frames_dir.mkdir(parents=True)
        h, w = size
        for t in range(len(joints) + extra_frames.get(vid, 0)):
            img = np.full((h, w, 3), 30, np.uint8)
            for j, (x, y) in enumerate(joints[min(t, len(joints) - 1)]):  # a coloured dot per joint
                xi, yi = int(round(x)), int(round(y))
                img[max(yi - 1, 0) : yi + 2, max(xi - 1, 0) : xi + 2] = (17 * j % 256, 255 - 13 * j, 40 + 11 * j)
            Image.fromarray(img).save(frames_dir / f"{t + 1:05d}.png")
        mat_dir = root / "joint_positions" / action / name
        mat_dir.mkdir(parents=True)
        scipy.io.savemat(mat_dir / "joint_positions.mat", {"pos_img": joints.transpose(2, 1, 0) + 1.0})
        label = "2" if test is None or vid in test else "1"
        splits.setdefault(action, []).append(f"{name}.avi {label}")
    (root / "splits").mkdir(exist_ok=True)
    for action, lines in splits.items():
        (root / "splits" / f"{action}_test_split1.txt").write_text("\n".join(lines) + "\n")


def write_vip_fixture(root: Path, videos: dict[str, np.ndarray],
                      unannotated: dict[str, list[int]] | None = None) -> None:
    """VIP_Fine: ``Images/<video>/<frame>.jpg``, single-channel class-id PNGs
    ``Annotations/Category_ids/<video>/<frame>.png`` and ``lists/val_videos.txt`` (author-style paths)."""
    colours = palette(256)
    unannotated = unannotated or {}
    (root / "lists").mkdir(parents=True)
    (root / "lists" / "val_videos.txt").write_text("".join(f"/home/author/VIP_Fine/Images/{v}\n" for v in videos))
    for video, labels in videos.items():
        (root / "Images" / video).mkdir(parents=True)
        (root / "Annotations" / "Category_ids" / video).mkdir(parents=True)
        for t, lab in enumerate(labels):
            name = f"{t * 5:06d}"
            Image.fromarray(colours[lab]).save(root / "Images" / video / f"{name}.jpg", quality=95)
            if t not in unannotated.get(video, []):
                gt_path = root / "Annotations" / "Category_ids" / video / f"{name}.png"
                Image.fromarray(lab.astype(np.uint8), mode="L").save(gt_path)
