"""What reprodistill reads from each DICOM test file inside the installed pydicom wheel (no download): a markdown
table of file -> shape, stored dtype, modality range, photometric interpretation, window, inversion -> outcome.

    python benchmarks/dicom_decoding_table.py [--window auto] [--frames middle]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reprodistill.data.dicom import DicomDecoding, read_dicom
from reprodistill.errors import DataError

FILES = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm", "examples_ybr_color.dcm", "examples_palette.dcm",
    "dicomdirtests/77654033/CR1/6154", "rtdose.dcm", "J2K_pixelrep_mismatch.dcm",
]  # fmt: skip


def main() -> None:
    import pydicom

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", default="auto")
    ap.add_argument("--frames", default="middle")
    args = ap.parse_args()
    decoding = DicomDecoding(args.window, args.frames)
    base = Path(pydicom.__file__).parent / "data" / "test_files"
    print(f"pydicom {pydicom.__version__}; data.dicom.window={decoding.window}, data.dicom.frames={decoding.frames}\n")
    print("| file | modality, photometric, transfer syntax | stored | modality range | window | inverted | outcome |")
    print("|---|---|---|---|---|---|---|")
    for name in FILES:
        path = base / name
        try:
            px, i = read_dicom(path, decoding)
        except DataError as e:
            print(f"| {name} | | | | | | stops: {str(e).split(': ', 1)[1]} |")
            continue
        frame = f", frame {i.frame}" if i.frame is not None else ""
        lo, hi = i.modality_range
        print(f"| {name} | {i.modality}, {i.photometric}, {i.transfer_syntax} | {i.stored_dtype} {i.shape}{frame} | "
              f"{lo:g} .. {hi:g} | {i.window} | {'yes' if i.inverted else 'no'} | uint8 {list(px.shape)}, "
              f"{px.min()}..{px.max()} |")  # fmt: skip


if __name__ == "__main__":
    main()
