"""Accuracy of the quality detectors (critic/detectors.py) at their per-domain defaults, on planted faults.

    PYTHONPATH=. python benchmarks/bench_detectors.py [--photos 2000] [--designs 1000] [--cleanvision /tmp/cv]

Photo-like images are `aesthetic sample-data`'s pictures (ingest.sample_data.render_photo) at 320x240, JPEG;
design-like ones are half Kuler swatches (ingest.kuler.render_swatch of sample-data's theme_colours) and half
critic renders (critic.designs.render of random genomes), 256 px, PNG. Each domain gets its clean images plus, at
known keys, fixed faults made from further clean images: Gaussian blur radius 3 and 6, exposure scaled to 8%
(dark) and blended to 92% white (light), blank white and flat single-colour canvases, 40x30 images, 600x100
strips, grey copies, byte copies and copies that differ only in a JPEG comment (exact duplicates), and a
re-encoded copy (not exact). Every image goes through what `aesthetic filter` runs (critic.scoring's decode,
critic.detectors.measure); precision and recall per detector and domain at the defaults, the share of clean images
flagged, and (photos, --cleanvision given) agreement with cleanvision's verdicts, which is installed outside the
project (pip install --target DIR cleanvision) and only appended to sys.path here.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from critic.designs import SHAPES, random_genome, render  # noqa: E402
from critic.detectors import fired, measure  # noqa: E402
from critic.scoring import decode_image_sized  # noqa: E402
from critic.settings import DETECTORS, DetectorSettings  # noqa: E402
from ingest.kuler import render_swatch  # noqa: E402
from ingest.sample_data import render_photo, theme_colours  # noqa: E402

# fault -> (the detectors it must trip, the detectors that may also fire on it without being wrong)
FAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "blur3": (("blurry",), ()),
    "blur6": (("blurry",), ("low_information",)),
    "dark": (("dark",), ("low_information", "blurry", "grayscale")),
    "light": (("light",), ("low_information", "blurry", "grayscale")),
    # All blank canvases have the same pixels, so each after the first is also an exact duplicate.
    "blank_white": (("low_information",), ("light", "blurry", "grayscale", "exact_duplicate")),
    "flat_colour": (("low_information",), ("dark", "light", "blurry", "grayscale", "exact_duplicate")),
    "tiny_40x30": (("odd_size",), ("blurry", "low_information")),
    # The centre square of a 600x100 design strip is 100 px of it enlarged: often flat and soft.
    "strip_600x100": (("odd_aspect",), ("blurry", "low_information")),
    "grey_copy": (("grayscale",), ()),
    "byte_copy": (("exact_duplicate",), ()),
    "comment_copy": (("exact_duplicate",), ()),
    "reencoded_copy": ((), ()),  # must NOT be an exact duplicate
}


def photo(rng: np.random.Generator, size: tuple[int, int] = (320, 240)) -> Image.Image:
    return render_photo(rng, float(rng.random()), *size)


def design(rng: np.random.Generator, size: tuple[int, int] = (256, 256)) -> Image.Image:
    if rng.random() < 0.5:
        img = render_swatch(theme_colours(rng, float(rng.random())))
    else:
        r = random.Random(int(rng.integers(1 << 30)))
        img = render(random_genome(r.choice(SHAPES), r), 256, supersample=2)
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)


def encode(img: Image.Image, fmt: str, comment: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=92, **({"comment": comment} if comment else {}))
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def planted(fault: str, make: Callable[..., Image.Image], rng: np.random.Generator, fmt: str) -> list[bytes]:
    """The encoded image(s) of one planted fault: copies come back as [original, copy]."""
    img = make(rng)
    arr = np.asarray(img, dtype=np.float32)
    if fault in ("blur3", "blur6"):
        return [encode(img.filter(ImageFilter.GaussianBlur(int(fault[-1]))), fmt)]
    if fault == "dark":
        return [encode(Image.fromarray((arr * 0.08).round().astype(np.uint8)), fmt)]
    if fault == "light":
        return [encode(Image.fromarray((arr * 0.08 + 255 * 0.92).round().astype(np.uint8)), fmt)]
    if fault == "blank_white":
        return [encode(Image.new("RGB", img.size, (255, 255, 255)), fmt)]
    if fault == "flat_colour":
        return [encode(Image.new("RGB", img.size, tuple(int(v) for v in rng.integers(0, 256, 3))), fmt)]
    if fault == "tiny_40x30":
        return [encode(img.resize((40, 30), Image.Resampling.LANCZOS), fmt)]
    if fault == "strip_600x100":
        return [encode(make(rng, (600, 100)), fmt)]
    if fault == "grey_copy":
        return [encode(img.convert("L").convert("RGB"), fmt)]
    data = encode(img, "JPEG")
    if fault == "byte_copy":
        return [data, bytes(data)]
    if fault == "comment_copy":
        return [data, encode(img, "JPEG", comment=b"copied by someone else")]
    return [data, encode(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG")]  # reencoded_copy


def corpus(domain: str, n_clean: int, n_fault: int, seed: int) -> list[tuple[str, str, bytes]]:
    """(key, fault or "clean", encoded bytes), clean images first, then each fault's at known keys."""
    rng = np.random.default_rng(seed)
    make, fmt = (photo, "JPEG") if domain == "photo" else (design, "PNG")
    items = [(f"{domain}-clean-{i:05d}", "clean", encode(make(rng), fmt)) for i in range(n_clean)]
    for fault in FAULTS:
        for i in range(n_fault):
            made = planted(fault, make, rng, fmt)
            for j, data in enumerate(made):  # of a pair, the first is the clean original the copy is of
                label = "clean" if len(made) == 2 and j == 0 else fault
                items.append((f"{domain}-{fault}-{i:04d}{'-copy' if j else ''}", label, data))
    return items


def measured(items: list[tuple[str, str, bytes]]) -> tuple[list[dict], float]:
    """Each item's detector columns, decoded as `aesthetic filter` decodes it; and the seconds per image."""
    out, started = [], time.perf_counter()
    for _, _, data in items:
        crop, (w, h) = decode_image_sized(data)
        out.append(measure(np.asarray(crop), w, h))
    return out, (time.perf_counter() - started) / max(len(items), 1)


def verdicts(items: list[tuple[str, str, bytes]], ms: list[dict], domain: str) -> list[set[str]]:
    """Which detectors fire on each item at the domain's defaults, plus exact_duplicate (a repeat of a pixel hash
    seen earlier in order), as `aesthetic filter --detect all --dedupe` decides."""
    thresholds = DetectorSettings(domain=domain).thresholds(domain)
    seen: set[str] = set()
    out = []
    for m in ms:
        got = {d for d, _ in fired(m, thresholds)}
        if m["pixel_hash"] in seen:
            got.add("exact_duplicate")
        seen.add(m["pixel_hash"])
        out.append(got)
    return out


def accuracy(items: list[tuple[str, str, bytes]], got: list[set[str]]) -> dict[str, dict]:
    """Per detector: recall on each fault planted for it, precision (a flag on an image whose fault neither
    expects nor allows it is false), and the share of clean images flagged."""
    labels = [label for _, label, _ in items]
    n_clean = labels.count("clean")
    out = {}
    for d in (*DETECTORS, "exact_duplicate"):
        flagged = [i for i, g in enumerate(got) if d in g]
        wrong = [i for i in flagged if labels[i] == "clean" or (d not in FAULTS[labels[i]][0] + FAULTS[labels[i]][1])]
        recall = {f: round(sum(d in got[i] for i, lab in enumerate(labels) if lab == f) / labels.count(f), 4)
                  for f, (want, _) in FAULTS.items() if d in want}
        out[d] = {"recall": recall, "flagged": len(flagged),
                  "precision": round(1 - len(wrong) / len(flagged), 4) if flagged else None,
                  "clean_flagged": round(sum(d in got[i] for i, lab in enumerate(labels) if lab == "clean")
                                         / n_clean, 4),
                  "false_keys": [items[i][0] for i in wrong[:5]]}
    missed = [items[i][0] for i, lab in enumerate(labels) if lab == "reencoded_copy" and "exact_duplicate" in got[i]]
    out["exact_duplicate"]["reencoded_called_exact"] = len(missed)
    return out


JPEG_MAGIC = b"\xff\xd8"
CLEANVISION = {"blurry": "blurry", "dark": "dark", "light": "light", "low_information": "low_information",
               "grayscale": "grayscale", "odd_size": "odd_size", "odd_aspect": "odd_aspect_ratio",
               "exact_duplicate": "exact_duplicates"}


def cleanvision_agreement(items: list[tuple[str, str, bytes]], got: list[set[str]], target: str) -> dict:
    """cleanvision's verdicts on the same files, per detector: how often the two agree, and the keys where each
    flags what the other does not (a few, with the planted label)."""
    sys.path.append(target)  # appended: the project's own numpy, Pillow and pandas stay first
    from cleanvision import Imagelab

    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for key, _, data in items:
            name = key + (".jpg" if data[:2] == JPEG_MAGIC else ".png")
            (Path(tmp) / name).write_bytes(data)
            names.append(name)
        lab = Imagelab(data_path=tmp)
        lab.find_issues(verbose=False)
        issues = lab.issues
        by_name = {Path(str(p)).name: row for p, row in issues.iterrows()}
    labels = {key: label for key, label, _ in items}
    out = {}
    for ours, theirs in CLEANVISION.items():
        col = f"is_{theirs}_issue"
        if col not in issues.columns:
            continue
        cv = [bool(by_name[n][col]) for n in names]
        mine = [ours in g for g in got]
        only_us = [items[i][0] for i in range(len(items)) if mine[i] and not cv[i]]
        only_cv = [items[i][0] for i in range(len(items)) if cv[i] and not mine[i]]
        out[ours] = {"agreement": round(1 - (len(only_us) + len(only_cv)) / len(items), 4), "ours": sum(mine),
                     "cleanvision": sum(cv), "only_ours": _by_label(only_us, labels),
                     "only_cleanvision": _by_label(only_cv, labels)}
    return out


def _by_label(keys: list[str], labels: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for k in keys:
        counts[labels[k]] = counts.get(labels[k], 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=2000, help="clean photo-like images")
    ap.add_argument("--designs", type=int, default=1000, help="clean design-like images")
    ap.add_argument("--per-fault", type=int, default=100, help="images per planted fault and domain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cleanvision", default=None, help="a folder cleanvision was pip-installed into (--target)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    results = {}
    for domain, n in (("photo", args.photos), ("design", args.designs)):
        items = corpus(domain, n, args.per_fault, args.seed)
        ms, per_image = measured(items)
        got = verdicts(items, ms, domain)
        results[domain] = {"images": len(items), "clean": n, "per_fault": args.per_fault,
                           "decode_and_measure_ms": round(per_image * 1000, 2),
                           "thresholds": DetectorSettings(domain=domain).thresholds(domain),
                           "detectors": accuracy(items, got)}
        if domain == "photo" and args.cleanvision:
            results[domain]["cleanvision"] = cleanvision_agreement(items, got, args.cleanvision)
        _print(domain, results[domain])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def _print(domain: str, r: dict) -> None:
    print(f"\n{domain}: {r['images']} images ({r['clean']} clean, {r['per_fault']} per fault), "
          f"decode+measure {r['decode_and_measure_ms']} ms/image")
    print("  thresholds: " + ", ".join(f"{k} {v:g}" for k, v in r["thresholds"].items()))
    print(f"  {'detector':16s} {'precision':>9s} {'clean flagged':>13s}  recall per planted fault")
    for d, a in r["detectors"].items():
        prec = "-" if a["precision"] is None else f"{a['precision']:.4f}"
        print(f"  {d:16s} {prec:>9s} {a['clean_flagged']:13.4f}  "
              + ", ".join(f"{f} {v:.4f}" for f, v in a["recall"].items()))
    for d, a in r.get("cleanvision", {}).items():
        print(f"  cleanvision {d:16s} agreement {a['agreement']:.4f} (ours {a['ours']}, cleanvision "
              f"{a['cleanvision']}); only ours {a['only_ours']}; only cleanvision {a['only_cleanvision']}")


if __name__ == "__main__":
    main()
